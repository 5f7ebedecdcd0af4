"""Bulkgrid under /api/v1: runs, paged results, content, screenshots (docs/providers/bulkgrid.md).

Auth: `x-api-key`; 401 body `{"error": "Unauthorized"}`. Errors carry `x-request-id`. List
query parameters may arrive as a Python repr (`known=['a', 'b']`, the SDK's quirk).
Statuses: pending, processing, completed, failed, cancelled.
"""

from __future__ import annotations

import ast
import struct
import zlib
from typing import Any

from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from runner.sandbox import determinism as det
from runner.sandbox.core import (
    Job,
    Phase,
    ProviderApi,
    View,
    int_param,
    item_failed,
    json_response,
    origin_of,
    read_json,
)

_SUBMIT_PATHS = {"extract": "extract", "crawl": "crawl", "deep-crawl": "deep_crawl", "map": "map"}
_STATUS = {
    Phase.QUEUED: "pending",
    Phase.RUNNING: "processing",
    Phase.SUCCEEDED: "completed",
    Phase.PARTIAL: "completed",
    Phase.FAILED: "failed",
    Phase.CANCELLED: "cancelled",
    Phase.EXPIRED: "completed",
}
_FORMATS = ("markdown", "cleanHtml", "rawHtml", "links")
MAX_LIMIT = 100


def parse_list_param(params: QueryParams, name: str) -> list[str]:
    """A list query parameter sent as repeated values, `a,b`, or a Python repr `['a', 'b']`."""
    values: list[str] = []
    for raw in params.getlist(name):
        text = raw.strip()
        if text.startswith(("[", "(")):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                parsed = None
            if isinstance(parsed, list | tuple):
                values.extend(str(v) for v in parsed)
                continue
        values.extend(v.strip() for v in text.split(",") if v.strip())
    return values


def png_bytes(seed: bytes, size: int = 8) -> bytes:
    """A small valid PNG filled with a seeded colour."""
    red, green, blue = seed[0], seed[1], seed[2]
    row = b"\x00" + bytes((red, green, blue)) * size
    raw = row * size

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class BulkgridApi(ProviderApi):
    name = "bulkgrid"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._errors = 0

    def api_key(self, headers: Headers) -> str | None:
        return headers.get("x-api-key") or None

    def error(self, status: int, message: str, code: str | None = None, **extra: Any) -> Response:
        body: dict[str, Any] = {"error": message}
        if code:
            body["code"] = code
        body.update(extra)
        response = json_response(body, status)
        self._errors += 1
        request_id = det.uuid_from(det.derive(self.sandbox.seed, "bulkgrid-error", self._errors))
        response.headers["x-request-id"] = request_id
        return response

    def unauthorized(self) -> Response:
        return self.error(401, "Unauthorized")

    def routes(self) -> list[BaseRoute]:
        routes = [
            self.route("POST", f"/api/v1/{path}", self._submitter(kind), submit=True)
            for path, kind in _SUBMIT_PATHS.items()
        ]
        return [
            *routes,
            self.route("POST", "/api/v1/runs", self._submitter(None), submit=True),
            self.route("GET", "/api/v1/runs", self.list_runs),
            self.route("GET", "/api/v1/runs/{runId}", self.get_run),
            self.route("DELETE", "/api/v1/runs/{runId}", self.delete_run),
            self.route("POST", "/api/v1/runs/{runId}/cancel", self.cancel_run),
            self.route("POST", "/api/v1/runs/{runId}/retry", self.retry_run),
            self.route("GET", "/api/v1/runs/{runId}/results", self.list_results),
            self.route("GET", "/api/v1/runs/{runId}/results/{resultId}/content", self.content),
            self.route("GET", "/api/v1/runs/{runId}/results/{resultId}/screenshot", self.shot),
        ]

    def _submitter(self, kind: str | None) -> Any:
        async def submit(request: Request) -> Response:
            return await self.submit(request, kind)

        return submit

    def _run(self, request: Request) -> Job | None:
        return self.sandbox.job(self.name, request.path_params["runId"])

    def _not_found(self) -> Response:
        return self.error(404, "Run not found", "NOT_FOUND")

    async def submit(self, request: Request, kind: str | None) -> Response:
        body, problem = await read_json(request)
        if problem:
            return self.error(400, problem, "VALIDATION_ERROR")
        if isinstance(body, dict) and kind is not None:
            body.setdefault("type", kind)
        errors = validate(body, kind)
        if errors:
            return self.error(400, "Validation failed", "VALIDATION_ERROR", details=errors)
        job = self.sandbox.create_job(self.name, body["type"], body, det.uuid_from)
        fit_results(job)
        return json_response(run_object(job, job.view(self.sandbox.clock())), 201)

    async def list_runs(self, request: Request) -> Response:
        q = request.query_params
        page = int_param(q.get("page"), 1, minimum=1)
        limit = int_param(q.get("limit"), 20, minimum=1)
        if page is None or limit is None or limit > MAX_LIMIT:
            return self.error(400, f"page must be >= 1 and limit between 1 and {MAX_LIMIT}")
        now = self.sandbox.clock()
        rows = []
        for job in self.sandbox.jobs[self.name].values():
            view = job.view(now)
            if q.get("status") and _STATUS[view.phase] != q["status"]:
                continue
            if q.get("type") and job.kind != q["type"]:
                continue
            row = run_object(job, view)
            row["created_at"] = job.listed_iso()  # the real clock, in creation order
            rows.append(row)
        if q.get("orderBy", "created_at") in ("-created_at", "created_at:desc"):
            rows.reverse()
        total = len(rows)
        return json_response(
            {
                "runs": rows[(page - 1) * limit : page * limit],
                "page": page,
                "limit": limit,
                "total": total,
            }
        )

    async def get_run(self, request: Request) -> Response:
        job = self._run(request)
        if job is None:
            return self._not_found()
        view = job.view(self.sandbox.clock())
        data = run_object(job, view)
        results = available_results(job, view)
        ok = [i for i in results if not _result_failed(job, i)]
        data["statistics"] = {
            "total_results": len(results),
            "success_count": len(ok),
            "error_count": len(results) - len(ok),
            "total_size": sum(job.knobs.result_bytes for _ in ok),
            "average_response_time": round(job.rng("rt").uniform(300, 2000), 1) if ok else 0,
        }
        data["source"] = None
        if request.query_params.get("includeResults") == "true":
            origin = origin_of(request)
            data["crawl_results"] = [self._result(job, i, origin) for i in results]
        return json_response(data)

    async def delete_run(self, request: Request) -> Response:
        job = self._run(request)
        if job is None:
            return self._not_found()
        del self.sandbox.jobs[self.name][job.id]
        return json_response({"success": True})

    async def cancel_run(self, request: Request) -> Response:
        job = self._run(request)
        if job is None:
            return self._not_found()
        job.cancel(self.sandbox.clock())  # a finished run stays as it was
        return json_response({"success": True})

    async def retry_run(self, request: Request) -> Response:
        job = self._run(request)
        if job is None:
            return self._not_found()
        raw = await request.body()
        extra, problem = (await read_json(request)) if raw else ({}, None)
        if problem or not isinstance(extra, dict):
            return self.error(400, problem or "body must be a JSON object", "VALIDATION_ERROR")
        urls = extra.get("urls")
        if urls is not None and (
            not isinstance(urls, list) or not all(isinstance(u, str) for u in urls)
        ):
            return self.error(400, "urls must be an array of strings", "VALIDATION_ERROR")
        # A retry is a new run of the same input (restricted to `urls` when given).
        body = dict(job.body)
        if urls:
            if "urls" in body:
                body["urls"] = urls
            else:
                body["url"] = urls[0]
        body["metadata"] = {"retry_of": job.id}
        retry = self.sandbox.create_job(self.name, job.kind, body, det.uuid_from)
        fit_results(retry)
        return json_response(run_object(retry, retry.view(self.sandbox.clock())))

    async def list_results(self, request: Request) -> Response:
        job = self._run(request)
        if job is None:
            return self._not_found()
        q = request.query_params
        page = int_param(q.get("page"), 1, minimum=1)
        limit = int_param(q.get("limit"), 20, minimum=1)
        if page is None or limit is None or limit > MAX_LIMIT:
            return self.error(400, f"page must be >= 1 and limit between 1 and {MAX_LIMIT}")
        view = job.view(self.sandbox.clock())
        indexes = available_results(job, view)
        ids = [result_id(job, i) for i in indexes]
        extra: dict[str, Any] = {}
        if q.get("incremental") == "true":
            known = set(parse_list_param(q, "known"))
            dirty = set(parse_list_param(q, "dirty"))
            indexes = [
                i for i, rid in zip(indexes, ids, strict=True) if rid not in known or rid in dirty
            ]
            extra["ids"] = ids
        origin = origin_of(request)
        chunk = indexes[(page - 1) * limit : page * limit]
        return json_response(
            {
                "results": [self._result(job, i, origin) for i in chunk],
                "page": page,
                "limit": limit,
                "total": len(indexes),
                **extra,
            }
        )

    def _find_result(self, request: Request) -> tuple[Job, int] | Response:
        job = self._run(request)
        if job is None:
            return self._not_found()
        view = job.view(self.sandbox.clock())
        wanted = request.path_params["resultId"]
        for index in available_results(job, view):
            if result_id(job, index) == wanted:
                return job, index
        return self.error(404, "Result not found", "NOT_FOUND")

    async def content(self, request: Request) -> Response:
        found = self._find_result(request)
        if isinstance(found, Response):
            return found
        job, index = found
        kind = request.query_params.get("type", "markdown")
        if kind not in _FORMATS:
            return self.error(
                400, f"type must be one of: {', '.join(_FORMATS)}", "VALIDATION_ERROR"
            )
        if _result_failed(job, index):
            return self.error(404, "Content not available for a failed result", "NOT_FOUND")
        text, media = result_content(job, index, kind)
        response = Response(text.encode(), media_type=media)
        if request.query_params.get("download") == "true":
            ext = {"markdown": "md", "links": "txt"}.get(kind, "html")
            response.headers["content-disposition"] = f'attachment; filename="{index}.{ext}"'
        return response

    async def shot(self, request: Request) -> Response:
        found = self._find_result(request)
        if isinstance(found, Response):
            return found
        job, index = found
        if not _wants_screenshot(job) or _result_failed(job, index):
            return self.error(404, "Screenshot not found", "NOT_FOUND")
        data = png_bytes(job.digest("png", index))
        if request.query_params.get("download") == "true":
            return Response(data, media_type="image/png")
        url = self.sandbox.files.url(
            origin_of(request),
            job=job,
            label=f"screenshot-{index}",
            name=f"{result_id(job, index)}.png",
            media_type="image/png",
            factory=lambda: data,
        )
        return json_response({"signedUrl": url})

    def _result(self, job: Job, index: int, origin: str) -> dict[str, Any]:
        rid = result_id(job, index)
        r = job.rng("result", index)
        failed = _result_failed(job, index)
        url = result_url(job, index)
        base = f"{origin}/api/v1/runs/{job.id}/results/{rid}/content?type="
        title = None if failed else det.words(r, 3).title()
        size = job.knobs.result_bytes
        extraction: dict[str, Any] = {}
        if job.kind == "extract" and not failed:
            props = (job.body.get("schema") or {}).get("properties") or {"value": {}}
            extraction = {name: det.words(r, 2) for name in sorted(props)}
        done_at = job.at(result_offset(job, index))
        return {
            "id": rid,
            "run_id": job.id,
            "workspace_id": _workspace(job),
            "url": url,
            "created_at": done_at,
            "final_url": None if failed else url,
            "title": title,
            "error_message": "Navigation timeout of 30000 ms exceeded" if failed else None,
            "crawled_at": None if failed else done_at,
            "status_code": None if failed else 200,
            "response_time_ms": None if failed else r.randint(120, 2400),
            "markdown_url": None if failed else base + "markdown",
            "markdown_size": None if failed else size,
            "clean_html_url": None if failed else base + "cleanHtml",
            "clean_html_size": None if failed else size + 120,
            "raw_html_url": None if failed else base + "rawHtml",
            "raw_html_size": None if failed else size * 3,
            "screenshot": "screenshot" if _wants_screenshot(job) and not failed else None,
            "screenshot_format": "png" if _wants_screenshot(job) and not failed else None,
            "screenshot_width": 8 if _wants_screenshot(job) and not failed else None,
            "screenshot_height": 8 if _wants_screenshot(job) and not failed else None,
            "extraction_data": extraction,
            "extraction_usage": {},
            "metadata": {},
            "links": {},
            "images": {},
            "formats_requested": list((job.body.get("options") or {}).get("formats") or []) or None,
        }


# -- payloads -----------------------------------------------------------------------------


def fit_results(job: Job) -> None:
    """Extract yields one result per URL; crawls and maps stay within their configured caps."""
    if job.kind == "extract":
        job.n_results = len(job.body["urls"])
        return
    config = job.body.get("config") or {}
    cap = config.get("maxPages") if job.kind != "map" else config.get("limit")
    if isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1:
        job.n_results = min(job.n_results, cap)


def _workspace(job: Job) -> str:
    return det.uuid_from(det.derive(job.labels[0], "bulkgrid-workspace"))


def _wants_screenshot(job: Job) -> bool:
    return bool((job.body.get("options") or {}).get("screenshot"))


def result_id(job: Job, index: int) -> str:
    return det.uuid_from(job.digest("result", index))


def result_url(job: Job, index: int) -> str:
    body = job.body
    if job.kind == "extract":
        return str(body["urls"][index])
    base = str(body["urls"][0] if "urls" in body else body["url"]).rstrip("/")
    return base if index == 0 else f"{base}/{det.words(job.rng('path', index), 1)}-{index}"


def result_offset(job: Job, index: int) -> float:
    return job.queue_s + job.run_s * (index + 1) / max(job.n_results, 1)


def _result_failed(job: Job, index: int) -> bool:
    return job.outcome is Phase.PARTIAL and item_failed(job, index, job.n_results)


def available_results(job: Job, view: View) -> list[int]:
    if view.phase is Phase.FAILED:
        return []
    if view.phase in (Phase.SUCCEEDED, Phase.PARTIAL, Phase.EXPIRED):
        return list(range(job.n_results))
    return list(range(int(job.n_results * view.progress)))


def result_content(job: Job, index: int, kind: str) -> tuple[str, str]:
    r = job.rng("content", index)
    markdown = det.text_of_size(r, job.knobs.result_bytes)
    if kind == "markdown":
        return markdown, "text/markdown; charset=utf-8"
    if kind == "links":
        links = [result_url(job, i) for i in range(job.n_results)]
        return "\n".join(links) + "\n", "text/plain; charset=utf-8"
    html = "".join(f"<p>{line}</p>" for line in markdown.splitlines())
    if kind == "rawHtml":
        html = f"<!doctype html><html><head><title>t</title></head><body>{html}</body></html>"
    return html, "text/html; charset=utf-8"


def run_object(job: Job, view: View) -> dict[str, Any]:
    total = job.n_results
    done_items = available_results(job, view)
    failed = sum(1 for i in done_items if _result_failed(job, i))
    done = len(done_items) - failed
    in_progress = 0
    if view.phase is Phase.RUNNING:
        in_progress = min(total - len(done_items), 3)
    elif view.phase is Phase.FAILED:
        failed = total
    queued = 0 if view.phase.terminal else max(total - len(done_items) - in_progress, 0)
    body = job.body
    started = None if view.phase is Phase.QUEUED else job.started_iso()
    finished = job.finished_iso(view) if view.phase.terminal else None
    urls = list(body.get("urls") or [body["url"]])
    config = body.get("config") or {}
    return {
        "id": job.id,
        "status": _STATUS[view.phase],
        "type": job.kind,
        "urls": urls,
        "config": config,
        "queued": queued,
        "in_progress": in_progress,
        "done": done,
        "failed": failed,
        "created_at": job.created_iso(),
        "updated_at": finished or started or job.created_iso(),
        "started_at": started,
        "completed_at": finished,
        "last_error_at": finished if view.phase is Phase.FAILED else None,
        "last_heartbeat": started,
        "last_error": "All URLs failed to load" if view.phase is Phase.FAILED else None,
        "error_code": "CRAWL_FAILED" if view.phase is Phase.FAILED else None,
        "error_count": failed,
        "retry_count": 0,
        "max_retries": int(body.get("maxRetries", 3)),
        "priority": 0,
        "processing_time_ms": round(job.total_s * 1000) if view.phase.terminal else None,
        "error_details": {},
        "metadata": dict(body.get("metadata") or {}),
        "extraction_schema": dict(body.get("schema") or {}),
        "inline_credentials": {},
        "query": body.get("query"),
        "extraction_query": body.get("query"),
        "credential_id": None,
        "requested_by_user_id": None,
        "message_ids": [],
        "needs_dispatch": False,
        "workspace_id": _workspace(job),
        "indexing_started_at": None,
        "indexing_completed_at": None,
        "indexing_time_ms": None,
        **(
            {"result_data": {"links": [result_url(job, i) for i in done_items]}}
            if job.kind == "map"
            else {}
        ),
    }


def validate(body: Any, kind: str | None) -> list[dict[str, str]]:
    if not isinstance(body, dict):
        return [{"path": "", "message": "Expected object"}]
    run_type = body.get("type")
    if run_type not in _SUBMIT_PATHS.values():
        return [{"path": "type", "message": "Expected 'extract' | 'crawl' | 'deep_crawl' | 'map'"}]
    if kind is not None and run_type != kind:
        return [{"path": "type", "message": f"Expected '{kind}'"}]
    errors = []

    def url_ok(value: Any) -> bool:
        return isinstance(value, str) and value.startswith(("http://", "https://"))

    if run_type in ("extract", "crawl"):
        urls = body.get("urls")
        if not isinstance(urls, list) or not urls:
            errors.append({"path": "urls", "message": "Required: a non-empty array of URLs"})
        else:
            errors += [
                {"path": f"urls.{i}", "message": "Invalid url"}
                for i, u in enumerate(urls)
                if not url_ok(u)
            ]
    else:
        if not url_ok(body.get("url")):
            errors.append({"path": "url", "message": "Required: a valid URL"})
    if run_type == "extract":
        if not isinstance(body.get("query"), str) or not body.get("query"):
            errors.append({"path": "query", "message": "Required"})
        if not isinstance(body.get("schema"), dict):
            errors.append({"path": "schema", "message": "Required: a JSON Schema object"})
    return errors
