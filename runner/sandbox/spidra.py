"""Spidra under /api: scrape, batch scrape and crawl (docs/providers/spidra.md).

Auth: `Authorization: Bearer <key>` (SDK) or `x-api-key` (docs); both accepted. Errors:
`{status: "error", message, code?}`. Limits: 429 with Retry-After and draft-6
`RateLimit-Limit/-Remaining/-Reset`; `TOO_MANY_PENDING_JOBS` (10/50/5) when enabled.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import Headers
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
from runner.sandbox.limits import retry_after_header
from runner.sandbox.scenario import RateLimit

MAX_SCRAPE_URLS = 3
MAX_BATCH_URLS = 50
INLINE_CRAWL_PAGES = 100
MAX_PAGES_LIMIT = 1000
_QUEUED_MESSAGES = {"scrape": "Scrape job queued", "crawl": "Crawl job queued"}


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://")) and len(value) > 8


class SpidraApi(ProviderApi):
    name = "spidra"
    prefix = "/api"

    def api_key(self, headers: Headers) -> str | None:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip() or None
        return headers.get("x-api-key") or None

    def error(self, status: int, message: str, code: str | None = None, **extra: Any) -> Response:
        body: dict[str, Any] = {"status": "error", "message": message}
        if code:
            body["code"] = code
        body.update(extra)
        return json_response(body, status)

    def unauthorized(self) -> Response:
        return self.error(401, "Invalid or missing API key", "UNAUTHORIZED")

    def no_credits(self) -> Response:  # a 403 told apart by its message (spidra.md#errors)
        return self.error(403, "Monthly credit limit reached", "FORBIDDEN")

    def throttled(self, retry_after: float, limit: RateLimit, remaining: int) -> Response:
        seconds = retry_after_header(retry_after)
        response = self.error(
            429,
            "Too many requests, please try again later.",
            "RATE_LIMITED",
            retry_after=int(seconds),
        )
        response.headers.update(
            {
                "Retry-After": seconds,
                "RateLimit-Limit": str(limit.requests),
                "RateLimit-Remaining": str(remaining),
                "RateLimit-Reset": seconds,
            }
        )
        return response

    def busy(self, cap: int) -> Response:
        return self.error(
            429,
            f"Too many pending jobs (limit {cap}); wait for some to finish.",
            "TOO_MANY_PENDING_JOBS",
        )

    def server_error(self, status: int) -> Response:
        if status == 503:
            return self.error(503, "Service is busy, retry later", "SERVICE_BUSY", retry_after=1)
        return self.error(status, "Internal server error", "INTERNAL_ERROR")

    def decorate(self, response: Response, limit: RateLimit, now: float) -> None:
        assert self.window is not None
        response.headers["RateLimit-Limit"] = str(limit.requests)
        response.headers["RateLimit-Remaining"] = str(self.window.remaining(now))
        response.headers["RateLimit-Reset"] = retry_after_header(self.window.reset_in(now))

    def routes(self) -> list[BaseRoute]:
        return [
            self.route("POST", "/scrape", self.submit_scrape, submit=True),
            self.route("GET", "/scrape/{jobId}", self.get_scrape),
            self.route("POST", "/batch/scrape", self.submit_batch, submit=True),
            self.route("GET", "/batch/scrape", self.list_batches),
            self.route("GET", "/batch/scrape/{batchId}", self.get_batch),
            self.route("DELETE", "/batch/scrape/{batchId}", self.cancel_batch),
            self.route("POST", "/batch/scrape/{batchId}/retry", self.retry_batch),
            self.route("POST", "/crawl", self.submit_crawl, submit=True),
            self.route("GET", "/crawl/history", self.crawl_history),  # before /crawl/{jobId}
            self.route("GET", "/crawl/{jobId}", self.get_crawl),
            self.route("GET", "/crawl/{jobId}/pages", self.crawl_pages),
            self.route("DELETE", "/crawl/{jobId}", self.cancel_crawl),
        ]

    # -- shared -------------------------------------------------------------------------------

    def _pending_refusal(self, kind: str) -> Response | None:
        caps = self.knobs.pending_limits
        if not caps or kind not in caps:
            return None
        now = self.sandbox.clock()
        pending = sum(
            1
            for job in self.sandbox.jobs[self.name].values()
            if job.kind == kind and not job.view(now).phase.terminal
        )
        if pending < caps[kind]:
            return None
        return self.error(
            429,
            f"Too many pending {kind} jobs (limit {caps[kind]}); wait for some to finish.",
            "TOO_MANY_PENDING_JOBS",
        )

    def _job(self, request: Request, param: str, kind: str) -> Job | None:
        job = self.sandbox.job(self.name, request.path_params[param])
        if job is None or job.kind != kind:
            return None
        return job

    @staticmethod
    def _invalid(errors: list[str]) -> dict[str, Any]:
        return {"message": errors[0], "code": "VALIDATION_ERROR", "errors": errors}

    # -- scrape -------------------------------------------------------------------------------

    async def submit_scrape(self, request: Request) -> Response:
        body, problem = await read_json(request)
        errors = [problem] if problem else _validate_scrape(body)
        if errors:
            return self.error(400, **self._invalid(errors))
        refusal = self._pending_refusal("scrape")
        if refusal is not None:
            return refusal
        job = self.sandbox.create_job(self.name, "scrape", body, det.uuid_from)
        job.extra["delayed"] = job.rng("delayed").random() < 0.2
        return json_response(
            {"status": "queued", "jobId": job.id, "message": _QUEUED_MESSAGES["scrape"]}, 202
        )

    async def get_scrape(self, request: Request) -> Response:
        job = self._job(request, "jobId", "scrape")
        if job is None:
            return self.error(404, "Scrape not found")
        view = job.view(self.sandbox.clock())
        # purged after retention (docs/providers/spidra.md#statuses)
        if view.phase is Phase.EXPIRED:
            return self.error(404, "Scrape not found")
        return json_response(scrape_status(job, view))

    # -- batch --------------------------------------------------------------------------------

    async def submit_batch(self, request: Request) -> Response:
        body, problem = await read_json(request)
        errors = [problem] if problem else _validate_batch(body)
        if errors:
            return self.error(400, **self._invalid(errors))
        refusal = self._pending_refusal("batch")
        if refusal is not None:
            return refusal
        job = self.sandbox.create_job(self.name, "batch", body, det.uuid_from)
        job.extra["retried"] = {}
        response = json_response(
            {"status": "queued", "batchId": job.id, "total": len(body["urls"])}, 202
        )
        response.headers["Location"] = f"/api/batch/scrape/{job.id}"
        return response

    async def get_batch(self, request: Request) -> Response:
        job = self._job(request, "batchId", "batch")
        if job is None:
            return self.error(404, "Batch not found")
        return json_response(batch_status(job, job.view(self.sandbox.clock())))

    async def list_batches(self, request: Request) -> Response:
        page = int_param(request.query_params.get("page"), 1, minimum=1)
        limit = int_param(request.query_params.get("limit"), 20, minimum=1)
        if page is None or limit is None:
            return self.error(400, "page and limit must be positive integers", "VALIDATION_ERROR")
        now = self.sandbox.clock()
        batches = [j for j in self.sandbox.jobs[self.name].values() if j.kind == "batch"]
        chunk = batches[(page - 1) * limit : page * limit]
        rows = []
        for job in chunk:
            data = batch_status(job, job.view(now))
            data.pop("items")
            rows.append({"batchId": job.id, **data, "createdAt": job.listed_iso()})
        total = len(batches)
        return json_response(
            {
                "jobs": rows,
                "pagination": {
                    "page": page,
                    "limit": limit,
                    "total": total,
                    "totalPages": (total + limit - 1) // limit,
                },
            }
        )

    async def cancel_batch(self, request: Request) -> Response:
        job = self._job(request, "batchId", "batch")
        if job is None:
            return self.error(404, "Batch not found")
        now = self.sandbox.clock()
        before = batch_status(job, job.view(now))
        if not job.cancel(now):
            return self.error(400, "Batch has already finished", "BATCH_FINISHED")
        unfinished = [i for i in before["items"] if i["status"] in ("pending", "running")]
        return json_response(
            {
                "status": "cancelled",
                "cancelledItems": len(unfinished),
                "creditsRefunded": 2 * len(unfinished),
            }
        )

    async def retry_batch(self, request: Request) -> Response:
        job = self._job(request, "batchId", "batch")
        if job is None:
            return self.error(404, "Batch not found")
        now = self.sandbox.clock()
        view = job.view(now)
        if not view.phase.terminal:
            return self.error(400, "Batch is still running", "BATCH_RUNNING")
        items = batch_status(job, view)["items"]
        retried = job.extra["retried"]
        count = 0
        for index, item in enumerate(items):
            if item["status"] == "failed":
                retried[index] = view.elapsed
                count += 1
        return json_response({"retriedCount": count})

    # -- crawl --------------------------------------------------------------------------------

    async def submit_crawl(self, request: Request) -> Response:
        body, problem = await read_json(request)
        errors = [problem] if problem else _validate_crawl(body)
        if errors:
            return self.error(400, **self._invalid(errors))
        refusal = self._pending_refusal("crawl")
        if refusal is not None:
            return refusal
        job = self.sandbox.create_job(self.name, "crawl", body, det.uuid_from)
        job.n_results = max(1, min(int(body.get("maxPages", 5)), job.n_results))
        return json_response(
            {"status": "queued", "jobId": job.id, "message": _QUEUED_MESSAGES["crawl"]}, 202
        )

    async def get_crawl(self, request: Request) -> Response:
        job = self._job(request, "jobId", "crawl")
        if job is None:
            return self.error(404, "Crawl job not found")
        view = job.view(self.sandbox.clock())
        origin = origin_of(request)
        crawled = crawled_pages(job, view)
        inline = [
            self._page(job, origin, i, inline=True) for i in range(min(crawled, INLINE_CRAWL_PAGES))
        ]
        status = _crawl_status(view)
        data: dict[str, Any] = {
            "jobId": job.id,
            "status": status,
            "progress": {
                "message": _crawl_message(status, crawled),
                "progress": round(view.progress, 3),
                "pagesCrawled": crawled,
                "maxPages": int(job.body.get("maxPages", 5)),
            },
            "result": inline,
            "totalPages": crawled,
            "resultTruncated": crawled > INLINE_CRAWL_PAGES,
            "error": _error_text(job) if view.phase is Phase.FAILED else None,
            "createdAt": job.created_iso(),
        }
        return json_response(data)

    async def crawl_history(self, request: Request) -> Response:
        """`{jobs, total, page, totalPages}` (docs/providers/spidra.md#endpoints), oldest first."""
        page = int_param(request.query_params.get("page"), 1, minimum=1)
        limit = int_param(request.query_params.get("limit"), 20, minimum=1)
        if page is None or limit is None:
            return self.error(400, "page and limit must be positive integers", "VALIDATION_ERROR")
        now = self.sandbox.clock()
        crawls = [j for j in self.sandbox.jobs[self.name].values() if j.kind == "crawl"]
        rows = []
        for job in crawls[(page - 1) * limit : page * limit]:
            view = job.view(now)
            rows.append(
                {
                    "jobId": job.id,
                    "baseUrl": job.body["baseUrl"],
                    "status": _crawl_status(view),
                    "pagesCrawled": crawled_pages(job, view),
                    "maxPages": int(job.body.get("maxPages", 5)),
                    "createdAt": job.listed_iso(),  # the real clock (listings only)
                }
            )
        total = len(crawls)
        return json_response(
            {"jobs": rows, "total": total, "page": page, "totalPages": (total + limit - 1) // limit}
        )

    async def crawl_pages(self, request: Request) -> Response:
        job = self._job(request, "jobId", "crawl")
        if job is None:
            return self.error(404, "Crawl job not found")
        offset = int_param(request.query_params.get("offset"), 0)
        limit = int_param(request.query_params.get("limit"), 100, minimum=1)
        if offset is None or limit is None or limit > MAX_PAGES_LIMIT:
            return self.error(
                400,
                f"offset must be >= 0 and limit between 1 and {MAX_PAGES_LIMIT}",
                "VALIDATION_ERROR",
            )
        view = job.view(self.sandbox.clock())
        total = crawled_pages(job, view)
        origin = origin_of(request)
        pages = [
            self._page(job, origin, i, inline=False)
            for i in range(offset, min(offset + limit, total))
        ]
        return json_response(
            {
                "pages": pages,
                "total": total,
                "offset": offset,
                "limit": limit,
                "hasMore": offset + len(pages) < total,
            }
        )

    async def cancel_crawl(self, request: Request) -> Response:
        job = self._job(request, "jobId", "crawl")
        if job is None:
            return self.error(404, "Crawl job not found")
        if not job.cancel(self.sandbox.clock()):
            return self.error(400, "Crawl job has already finished", "CRAWL_FINISHED")
        return json_response({"status": "cancelled", "jobId": job.id})

    def _page(self, job: Job, origin: str, index: int, *, inline: bool) -> dict[str, Any]:
        r = job.rng("page", index)
        base = str(job.body["baseUrl"]).rstrip("/")
        url = base if index == 0 else f"{base}/{det.words(r, 2).replace(' ', '-')}-{index}"
        failed = job.outcome is Phase.PARTIAL and item_failed(job, index, job.n_results)
        title = det.words(r, 3).title()
        markdown = det.text_of_size(r, job.knobs.result_bytes, heading=title)
        data = None if failed else {"title": title, "summary": markdown[:120]}
        files = self.sandbox.files
        html_url = files.url(
            origin,
            job=job,
            label=f"page-{index}.html",
            name=f"page-{index}.html",
            media_type="text/html; charset=utf-8",
            factory=lambda: f"<html><body><pre>{markdown}</pre></body></html>".encode(),
        )
        md_url = files.url(
            origin,
            job=job,
            label=f"page-{index}.md",
            name=f"page-{index}.md",
            media_type="text/markdown; charset=utf-8",
            factory=markdown.encode,
        )
        if inline:
            return {
                "url": url,
                "title": title,
                "status": "failed" if failed else "success",
                "data": data,
                "html": None if failed else html_url,
                "markdown": None if failed else md_url,
                "depth": 0 if index == 0 else 1,
                "parentUrl": None if index == 0 else base,
            }
        return {
            "id": det.uuid_from(job.digest("page-id", index)),
            "url": url,
            "title": title,
            "status": "failed" if failed else "success",
            "data": json.dumps(data) if data is not None else None,
            "error_message": "Page timed out" if failed else None,
            "html": None if failed else html_url,
            "markdown": None if failed else md_url,
            "created_at": job.at(job.queue_s + job.run_s * (index + 1) / job.n_results),
        }


# -- payloads (pure functions of the job and the instant) -------------------------------------


def scrape_status(job: Job, view: View) -> dict[str, Any]:
    phase = view.phase
    if phase is Phase.QUEUED:
        status = "delayed" if job.extra.get("delayed") else "waiting"
        progress = {"message": "Waiting in queue", "progress": 0}
    elif phase is Phase.RUNNING:
        status = "active"
        progress = {"message": "Processing content with AI...", "progress": round(view.progress, 3)}
    elif phase is Phase.FAILED:
        return {
            "status": "failed",
            "progress": {"message": "Scrape failed", "progress": 1},
            "result": None,
            "error": _error_text(job),
        }
    else:
        return {
            "status": "completed",
            "progress": {"message": "Scrape completed successfully", "progress": 1},
            "result": scrape_result(job),
            "error": None,
        }
    return {"status": status, "progress": progress, "result": None, "error": None}


def scrape_result(job: Job) -> dict[str, Any]:
    body = job.body
    partial = job.outcome is Phase.PARTIAL
    data = []
    for index, entry in enumerate(body["urls"]):
        r = job.rng("url", index)
        title = det.words(r, 3).title()
        success = not (partial and index == len(body["urls"]) - 1 and len(body["urls"]) > 1)
        data.append(
            {
                "url": entry["url"],
                "title": title,
                "markdownContent": det.text_of_size(r, job.knobs.result_bytes, heading=title)
                if success
                else "",
                "success": success,
                "screenshotUrl": None,
            }
        )
    ai_failed = partial and len(data) == 1
    markdown = "\n\n".join(d["markdownContent"] for d in data if d["success"])
    r = job.rng("content")
    content: Any
    if body.get("prompt") and body.get("output", "json") == "json" and not ai_failed:
        content = {
            "items": [
                {"name": det.words(r, 2).title(), "value": round(r.uniform(1, 500), 2)}
                for _ in range(job.n_results)
            ]
        }
    else:
        content = markdown
    tokens_in, tokens_out = r.randint(200, 4000), r.randint(20, 800)
    return {
        "content": content,
        "data": data,
        "screenshots": [],
        "ai_extraction_failed": ai_failed,
        "extraction_empty": False,
        "stats": {
            "durationMs": round(job.total_s * 1000),
            "captchaSolvedCount": 0,
            "inputTokens": tokens_in,
            "outputTokens": tokens_out,
            "totalTokens": tokens_in + tokens_out,
        },
    }


def _item_schedule(job: Job, index: int, count: int) -> tuple[float, float, bool]:
    """(start, end, failed) of batch item `index` in virtual seconds since creation."""
    r = job.rng("item", index)
    span = job.run_s / max(count, 1)
    start = job.queue_s + span * index * r.uniform(0.0, 0.5)
    end = job.queue_s + span * (index + 1) * r.uniform(0.8, 1.0)
    if index == count - 1:
        end = job.total_s
    return start, min(end, job.total_s), item_failed(job, index, count)


def batch_status(job: Job, view: View) -> dict[str, Any]:
    urls = job.body["urls"]
    count = len(urls)
    items = []
    completed = failed = 0
    retried: dict[int, float] = job.extra.get("retried", {})
    cancelled_at = job.cancelled_at if view.phase is Phase.CANCELLED else None
    for index, url in enumerate(urls):
        start, end, item_failed = _item_schedule(job, index, count)
        if index in retried:  # a retry runs the item again briefly and succeeds
            start, end, item_failed = retried[index], retried[index] + 0.3 * job.run_s, False
        e = view.elapsed if cancelled_at is None else min(view.elapsed, cancelled_at)
        if e >= end:
            status = "failed" if item_failed else "completed"
        elif cancelled_at is not None:
            status = "failed"
        elif e >= start:
            status = "running"
        else:
            status = "pending"
        r = job.rng("item-content", index)
        item: dict[str, Any] = {
            "uuid": det.uuid_from(job.digest("item", index)),
            "url": url,
            "jobId": det.uuid_from(job.digest("item-job", index)),
            "status": status,
            "result": None,
            "creditsUsed": 2 if status in ("completed", "failed") else 0,
            "startedAt": job.at(start) if status != "pending" else None,
            "finishedAt": job.at(end) if status in ("completed", "failed") else None,
            "screenshotUrl": None,
            "error": None,
        }
        if status == "completed":
            completed += 1
            item["result"] = {
                "content": det.text_of_size(r, job.knobs.result_bytes),
                "title": det.words(r, 3).title(),
            }
        elif status == "failed":
            failed += 1
            item["error"] = (
                "Cancelled" if cancelled_at is not None and e < end else _error_text(job, index)
            )
        items.append(item)
    if view.phase is Phase.CANCELLED:
        status = "cancelled"
    elif completed + failed < count:
        status = "pending" if view.phase is Phase.QUEUED else "running"
    elif completed == 0:
        status = "failed"
    else:
        status = "completed"
    finished = status in ("completed", "failed", "cancelled")
    return {
        "status": status,
        "totalUrls": count,
        "completedCount": completed,
        "failedCount": failed,
        "createdAt": job.created_iso(),
        "finishedAt": job.finished_iso(view) if finished else None,
        "items": items,
    }


def crawled_pages(job: Job, view: View) -> int:
    if view.phase in (Phase.SUCCEEDED, Phase.PARTIAL):
        return job.n_results
    if view.phase is Phase.FAILED:
        return 0
    return int(job.n_results * view.progress)


def _crawl_status(view: View) -> str:
    return {
        Phase.QUEUED: "waiting",
        Phase.RUNNING: "running",
        Phase.SUCCEEDED: "completed",
        Phase.PARTIAL: "completed",
        Phase.FAILED: "failed",
        Phase.CANCELLED: "cancelled",
        Phase.EXPIRED: "completed",
    }[view.phase]


def _crawl_message(status: str, crawled: int) -> str:
    if status == "waiting":
        return "Waiting in queue"
    if status == "running":
        return f"Crawling... {crawled} pages so far"
    return f"Crawl {status}: {crawled} pages"


def _error_text(job: Job, index: int = 0) -> str:
    body = job.body
    if job.kind == "scrape":
        url = body["urls"][0]["url"]
    elif job.kind == "batch":
        url = body["urls"][index]
    else:
        url = body["baseUrl"]
    return f"Failed to scrape {url} — net::ERR_NAME_NOT_RESOLVED"


# -- validation (Spidra answers 400 with its error body) --------------------------------------


def _common_options(body: dict[str, Any]) -> list[str]:
    errors = []
    if "prompt" in body and not isinstance(body["prompt"], str):
        errors.append("prompt must be a string")
    if "output" in body and body["output"] not in ("json", "markdown", "text", "table"):
        errors.append("output must be one of: json, markdown")
    if "schema" in body and not isinstance(body["schema"], dict):
        errors.append("schema must be a JSON Schema object")
    return errors


def _validate_scrape(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["request body must be a JSON object"]
    urls = body.get("urls")
    if not isinstance(urls, list) or not urls:
        return ["urls is required and must be a non-empty array"]
    if len(urls) > MAX_SCRAPE_URLS:
        return [f"urls must contain at most {MAX_SCRAPE_URLS} items"]
    errors = [
        f"urls[{i}].url must be a valid http(s) URL"
        for i, entry in enumerate(urls)
        if not isinstance(entry, dict) or not _is_url(entry.get("url"))
    ]
    return errors + _common_options(body)


def _validate_batch(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["request body must be a JSON object"]
    urls = body.get("urls")
    if not isinstance(urls, list) or not urls:
        return ["urls is required and must be a non-empty array"]
    if len(urls) > MAX_BATCH_URLS:
        return [f"urls must contain at most {MAX_BATCH_URLS} items"]
    errors = [
        f"urls[{i}] must be a valid http(s) URL" for i, u in enumerate(urls) if not _is_url(u)
    ]
    return errors + _common_options(body)


def _validate_crawl(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["request body must be a JSON object"]
    errors = []
    if not _is_url(body.get("baseUrl")):
        errors.append("baseUrl is required and must be a valid http(s) URL")
    max_pages = body.get("maxPages", 5)
    if isinstance(max_pages, bool) or not isinstance(max_pages, int) or max_pages < 1:
        errors.append("maxPages must be a positive integer")
    return errors + _common_options(body)
