"""Pulse at the root: /extract, /schema, /split, /tables, /job/{id} (docs/providers/pulse.md).

Auth: `x-api-key`. Errors: `{"error": {"code", "message", "details"}}` (AUTH_001, RATE_001,
GENERAL_001...). Statuses: pending, processing, completed, failed, canceled (one L), expired.
Results at or above `large_result_bytes` become `{is_url: true, url}`: single use, then 410.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from runner.sandbox import determinism as det
from runner.sandbox.core import Job, Phase, ProviderApi, View, json_response, origin_of, read_json
from runner.sandbox.limits import retry_after_header
from runner.sandbox.scenario import RateLimit
from runner.store.jsonio import json_line

_STATUS = {
    Phase.QUEUED: "pending",
    Phase.RUNNING: "processing",
    Phase.SUCCEEDED: "completed",
    Phase.PARTIAL: "completed",
    Phase.FAILED: "failed",
    Phase.CANCELLED: "canceled",
    Phase.EXPIRED: "expired",
}
_KINDS = ("extract", "schema", "split", "tables")


class PulseApi(ProviderApi):
    name = "pulse"

    def api_key(self, headers: Headers) -> str | None:
        return headers.get("x-api-key") or None

    def error(self, status: int, message: str, code: str | None = None, **extra: Any) -> Response:
        details = extra.pop("details", {})
        return json_response(
            {"error": {"code": code or "GENERAL_001", "message": message, "details": details}},
            status,
        )

    def unauthorized(self) -> Response:
        return self.error(401, "Invalid or missing API key", "AUTH_001")

    def no_credits(self) -> Response:  # docs/providers/pulse.md#errors
        return self.error(402, "Insufficient credits", "BILLING_002")

    def throttled(self, retry_after: float, limit: RateLimit, remaining: int) -> Response:
        response = self.error(429, "Rate limit exceeded", "RATE_001")
        response.headers["Retry-After"] = retry_after_header(retry_after)
        return response

    def server_error(self, status: int) -> Response:
        return self.error(status, "Internal server error", "GENERAL_001")

    def routes(self) -> list[BaseRoute]:
        routes = [
            self.route("POST", f"/{kind}", self._submitter(kind), submit=True) for kind in _KINDS
        ]
        return [
            *routes,
            self.route("GET", "/job/{job_id}", self.get_job),
            self.route("DELETE", "/job/{job_id}", self.cancel_job),
            self.route("POST", "/cancel/{job_id}", self.cancel_job),
        ]

    def _submitter(self, kind: str) -> Any:
        async def submit(request: Request) -> Response:
            return await self.submit(request, kind)

        return submit

    async def submit(self, request: Request, kind: str) -> Response:
        body, problem = await read_json(request)
        if problem:
            return self.error(400, problem, "GENERAL_002")
        errors = _validate(kind, body)
        if errors:
            return self.error(400, errors[0], "GENERAL_002", details={"errors": errors})
        job = self.sandbox.create_job(self.name, kind, body, det.uuid_from)
        if not body.get("async"):
            # Synchronous mode: the engine works while the client waits
            # (docs/providers/pulse.md#endpoints).
            if job.outcome is Phase.FAILED:
                return self.error(500, _error_text(job), "GENERAL_001")
            job.queue_s = job.run_s = 0.0
            return json_response(self._result(job, origin_of(request)))
        id_field = "tables_id" if kind == "tables" else "job_id"
        return json_response(
            {id_field: job.id, "status": "pending", "message": f"{kind.title()} job submitted"}
        )

    async def get_job(self, request: Request) -> Response:
        job = self.sandbox.job(self.name, request.path_params["job_id"])
        if job is None:
            return self.error(404, "Job not found", "JOB_001")
        view = job.view(self.sandbox.clock())
        return json_response(self._job_body(job, view, origin_of(request)))

    async def cancel_job(self, request: Request) -> Response:
        job = self.sandbox.job(self.name, request.path_params["job_id"])
        if job is None:
            return self.error(404, "Job not found", "JOB_001")
        # Best effort: a finished job is unchanged (docs/providers/pulse.md#cancel).
        job.cancel(self.sandbox.clock())
        return json_response({"job_id": job.id, "message": "Job cancelled successfully"})

    def _job_body(self, job: Job, view: View, origin: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "job_id": job.id,
            "status": _STATUS[view.phase],
            "created_at": job.created_iso(),
            "updated_at": _updated_at(job, view),
        }
        if view.phase in (Phase.SUCCEEDED, Phase.PARTIAL):
            data["result"] = self._result(job, origin)
        elif view.phase is Phase.EXPIRED:
            data["result"] = {"expired": True, "message": "Result retention period has passed"}
        elif view.phase is Phase.FAILED:
            data["error"] = _error_text(job)
        return data

    def _result(self, job: Job, origin: str) -> dict[str, Any]:
        result = build_result(job)
        size = len(json_line(result))
        if size < job.knobs.large_result_bytes:
            return result
        encoded = json_line(result)
        url = self.sandbox.files.url(
            origin,
            job=job,
            label="large-result",
            name=f"{job.id}.json",
            media_type="application/json",
            factory=lambda: encoded,
            single_use=True,
        )
        return {"is_url": True, "url": url}


def build_result(job: Job) -> dict[str, Any]:
    r = job.rng("result")
    body = job.body
    pages = r.randint(1, 12)
    plan = {"pages_used": pages, "tier": "standard"}
    if job.kind == "extract":
        return {
            "extraction_id": det.uuid_from(job.digest("extraction")),
            "markdown": det.text_of_size(r, job.knobs.result_bytes),
            "page_count": pages,
            "plan-info": plan,
        }
    if job.kind == "schema":
        props = (body.get("schema_config") or {}).get("input_schema", {}).get("properties", {})
        names = sorted(props) if isinstance(props, dict) and props else ["value"]
        return {
            "schema_output": {name: det.words(r, 2) for name in names},
            "plan-info": plan,
        }
    if job.kind == "split":
        topics = ((body.get("split_config") or {}).get("split_input")) or [{"name": "all"}]
        return {
            "split_id": det.uuid_from(job.digest("split")),
            "split_output": {
                str(t.get("name", i)) if isinstance(t, dict) else str(i): sorted(
                    r.sample(range(1, pages + 1), k=r.randint(1, pages))
                )
                for i, t in enumerate(topics)
            },
            "plan-info": plan,
        }
    return {
        "tables_output": [
            {
                "page": r.randint(1, pages),
                "html": f"<table><tr><td>{det.words(r, 2)}</td></tr></table>",
            }
            for _ in range(job.n_results)
        ],
        "plan-info": plan,
    }


def _updated_at(job: Job, view: View) -> str:
    if view.phase is Phase.QUEUED:
        return job.created_iso()
    if view.phase is Phase.RUNNING:
        return job.started_iso()
    return job.finished_iso(view)


def _error_text(job: Job) -> str:
    return f"Failed to process document: {det.words(job.rng('error'), 3)}"


def _validate(kind: str, body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["request body must be a JSON object"]
    if "async" in body and not isinstance(body["async"], bool):
        return ["async must be a boolean"]
    if kind == "extract":
        url = body.get("file_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return ["file_url is required and must be an http(s) URL"]
        return []
    if kind == "schema":
        if not any(k in body for k in ("extraction_id", "extraction_ids", "split_id")):
            return ["one of extraction_id, extraction_ids or split_id is required"]
        if "schema_config" not in body and "schema_config_id" not in body:
            return ["schema_config or schema_config_id is required"]
        return []
    if not isinstance(body.get("extraction_id"), str):
        return ["extraction_id is required"]
    if kind == "split" and "split_config" not in body and "split_config_id" not in body:
        return ["split_config or split_config_id is required"]
    return []
