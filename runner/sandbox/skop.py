"""Skop at the root: POST /scrape/, status and results (docs/providers/skop.md).

Auth: `Authorization: Bearer <sk-…>` or `X-API-Key`. Errors: `{"error": <code>, "message"}`
with codes validation_error, concurrency_limit_exceeded, not_found. While running, the status
may be the undocumented sub-phase `extracting` with `is_active: true`.
"""

from __future__ import annotations

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
    item_failed,
    json_response,
    origin_of,
    read_json,
)
from runner.sandbox.limits import retry_after_header
from runner.sandbox.scenario import RateLimit

_AGENTS = ("navigator", "discovery", "classifier", "extractor")
_PARAM_DEFAULTS: dict[str, Any] = {
    "single_page": True,
    "timeout": 1800,
    "confidence_threshold": 0.1,
    "file_type": "document",
    "max_file_size_mb": 100,
}


class SkopApi(ProviderApi):
    name = "skop"

    def api_key(self, headers: Headers) -> str | None:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip() or None
        return headers.get("x-api-key") or None

    def error(self, status: int, message: str, code: str | None = None, **extra: Any) -> Response:
        body: dict[str, Any] = {"error": code or "error", "message": message}
        body.update(extra)
        return json_response(body, status)

    def unauthorized(self) -> Response:
        return self.error(401, "Invalid or missing API key", "unauthorized")

    def throttled(self, retry_after: float, limit: RateLimit, remaining: int) -> Response:
        response = self.error(429, "Rate limit exceeded", "rate_limit_exceeded")
        response.headers["Retry-After"] = retry_after_header(retry_after)
        return response

    def busy(self, cap: int) -> Response:
        return self.error(
            429,
            f"Too many concurrent jobs (limit {cap}); wait for one to finish.",
            "concurrency_limit_exceeded",
        )

    def server_error(self, status: int) -> Response:
        if status == 503:
            return self.error(503, "Service temporarily unavailable", "service_unavailable")
        return self.error(status, "Internal server error", "internal_error")

    def routes(self) -> list[BaseRoute]:
        return [
            self.route("POST", "/scrape/", self.submit, submit=True),
            self.route("POST", "/scrape", self.submit, submit=True),
            self.route("GET", "/scrape/status/{job_id}", self.status),
            self.route("GET", "/scrape/results/{job_id}", self.results),
        ]

    async def submit(self, request: Request) -> Response:
        body, problem = await read_json(request)
        errors = [problem] if problem else validate(body)
        if errors:
            return self.error(400, errors[0], "validation_error", details=errors)
        cap = self.knobs.max_active
        if cap is not None:
            now = self.sandbox.clock()
            active = sum(
                1 for j in self.sandbox.jobs[self.name].values() if not j.view(now).phase.terminal
            )
            if active >= cap:
                return self.error(
                    429,
                    f"Too many concurrent jobs (limit {cap}); wait for one to finish.",
                    "concurrency_limit_exceeded",
                )
        job = self.sandbox.create_job(self.name, "scrape", body, det.skop_id_from)
        return json_response(
            {
                "job_id": job.id,
                "status": "pending",
                "message": "Scraping job created successfully",
                "estimated_completion": job.at(job.total_s, millis=False),
                "created_at": job.created_iso(millis=False),
            },
            201,
        )

    def _job(self, request: Request) -> Job | None:
        return self.sandbox.job(self.name, request.path_params["job_id"])

    async def status(self, request: Request) -> Response:
        job = self._job(request)
        if job is None:
            return self.error(404, "Job not found or access denied", "not_found")
        return json_response(status_body(job, job.view(self.sandbox.clock())))

    async def results(self, request: Request) -> Response:
        job = self._job(request)
        if job is None:
            return self.error(404, "Job not found or access denied", "not_found")
        view = job.view(self.sandbox.clock())
        if not view.phase.terminal:
            return self.error(400, "Job is not completed yet", "job_not_completed")
        return json_response(self._results(job, view, origin_of(request)))

    def _results(self, job: Job, view: View, origin: str) -> dict[str, Any]:
        ok = view.phase in (Phase.SUCCEEDED, Phase.PARTIAL, Phase.EXPIRED)
        found = job.n_results if ok else 0
        docs = []
        for index in range(found):
            if job.outcome is Phase.PARTIAL and item_failed(job, index, found):
                continue  # found but not downloaded
            docs.append(self._document(job, index, origin))
        runtime = round(job.run_s, 3)
        website = job.body["website"]
        return {
            "job_id": job.id,
            "status": _status(job, view),
            "message": f"Found {len(docs)} documents",
            "documents": docs,
            "metadata": {
                "job_id": job.id,
                "created_at": job.created_iso(millis=False),
                "completed_at": job.finished_iso(view, millis=False),
                "original_website": website,
                "original_prompt": job.body["prompt"],
                "parameters": {**_PARAM_DEFAULTS, **(job.body.get("parameters") or {})},
            },
            "total_documents_found": found,
            "total_documents_downloaded": len(docs),
            "total_pages_crawled": _pages(job, view),
            "success_rate": round(len(docs) / found, 4) if found else 0.0,
            "cost": round(0.10 * max(_pages(job, view), 1), 2),
            "total_runtime_seconds": runtime,
            "runtime_minutes": round(runtime / 60, 4),
            "has_errors": _has_errors(job, view),
            "errors": _errors(job, view),
            "warnings": [],
        }

    def _document(self, job: Job, index: int, origin: str) -> dict[str, Any]:
        r = job.rng("doc", index)
        title = det.words(r, 3).title()
        name = f"{title.replace(' ', '-').lower()}-{index}.pdf"
        size = job.knobs.result_bytes
        content = _pdf(det.text_of_size(r, size, heading=title))
        url = self.sandbox.files.url(
            origin,
            job=job,
            label=f"doc-{index}",
            name=name,
            media_type="application/pdf",
            factory=lambda: content,
        )
        return {
            "name": title,
            "url": url,
            "source_page": job.body["website"],
            "document_type": "pdf",
            "confidence_score": round(r.uniform(0.5, 0.99), 3),
            "file_size_mb": round(len(content) / 1_000_000, 6),
            "extracted_at": job.at(job.queue_s + job.run_s * (index + 1) / job.n_results),
        }


def _pdf(text: str) -> bytes:
    """Not a renderable PDF, but PDF-shaped bytes: header, the text, trailer."""
    return b"%PDF-1.4\n" + text.encode() + b"\n%%EOF\n"


def _pages(job: Job, view: View) -> int:
    full = job.n_results * 3 + 1
    if view.phase is Phase.QUEUED:
        return 0
    return full if view.phase.terminal else int(full * view.progress)


def _status(job: Job, view: View) -> str:
    phase = view.phase
    if phase is Phase.QUEUED:
        return "pending"
    if phase is Phase.RUNNING:
        return "extracting" if view.progress >= 0.5 else "in_progress"
    return {
        Phase.FAILED: "failed",
        Phase.CANCELLED: "cancelled",
    }.get(phase, "completed")


def _has_errors(job: Job, view: View) -> bool:
    return view.phase is Phase.FAILED or (view.phase.terminal and job.outcome is Phase.PARTIAL)


def _errors(job: Job, view: View) -> list[dict[str, Any]]:
    if not _has_errors(job, view):
        return []
    fatal = view.phase is Phase.FAILED
    return [
        {
            "error_id": det.uuid_from(job.digest("error")),
            "agent_name": "navigator" if fatal else "extractor",
            "error_type": "site_unreachable" if fatal else "download_failed",
            "error_message": "Could not load the website" if fatal else "Document download failed",
            "page_url": job.body["website"],
            "timestamp": job.finished_iso(view, millis=False),
            "is_recoverable": not fatal,
        }
    ]


def status_body(job: Job, view: View) -> dict[str, Any]:
    status = _status(job, view)
    running = view.phase is Phase.RUNNING
    agents_done = int(len(_AGENTS) * view.progress) if not view.phase.terminal else len(_AGENTS)
    found = job.n_results if view.phase.terminal and view.phase is not Phase.FAILED else 0
    if running:
        found = int(job.n_results * view.progress)
    progress: float | None = None if view.phase is Phase.QUEUED else round(view.progress * 100, 1)
    messages = {
        "pending": "Job is queued",
        "in_progress": "Discovering pages...",
        "extracting": "Currently extracting documents...",
        "completed": "Job completed successfully",
        "failed": "Job failed",
        "cancelled": "Job was cancelled",
    }
    return {
        "job_id": job.id,
        "status": status,
        "message": messages[status],
        "progress": progress,
        "created_at": job.created_iso(millis=False),
        "started_at": None if view.phase is Phase.QUEUED else job.started_iso(millis=False),
        "completed_at": job.finished_iso(view, millis=False) if view.phase.terminal else None,
        "estimated_completion": job.at(job.total_s, millis=False),
        "current_agent": _AGENTS[min(agents_done, len(_AGENTS) - 1)] if running else None,
        "agents_completed": list(_AGENTS[:agents_done]),
        "total_pages_crawled": _pages(job, view),
        "total_documents_found": found,
        "is_active": not view.phase.terminal,
        "has_errors": _has_errors(job, view),
        "errors": _errors(job, view),
        "warnings": [],
    }


def validate(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["request body must be a JSON object"]
    errors = []
    website = body.get("website")
    if not isinstance(website, str) or not website.startswith(("http://", "https://")):
        errors.append("website: must be a valid http or https URL")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not 10 <= len(prompt) <= 500:
        errors.append("prompt: must be between 10 and 500 characters")
    params = body.get("parameters", {})
    if not isinstance(params, dict):
        return [*errors, "parameters: must be an object"]
    bounds = {"timeout": (60, 3600), "confidence_threshold": (0, 1), "max_file_size_mb": (1, 500)}
    for key, (low, high) in bounds.items():
        value = params.get(key)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            errors.append(f"parameters.{key}: must be between {low} and {high}")
    unknown = sorted(set(params) - set(_PARAM_DEFAULTS))
    errors += [f"parameters.{key}: unknown parameter" for key in unknown]
    return errors
