"""Spidra adapter (job type `scrape`; wire-contracts.md §3, provider-docs.md §3).

Endpoints: `POST /scrape` → `jobId`; `GET /scrape/{jobId}` → status with `result` inline
(results are only ever inline for a single scrape). No cancel endpoint exists for a single
scrape, and no list endpoint finds one after an ambiguous submit.
Auth: `Authorization: Bearer <key>` (the SDK's header; the seed's `x-api-key` also works).
Published limits: 300 requests per IP per 15 min counting polls, `RateLimit-*` headers
(draft 6, reset in unix time); 10 pending scrapes (429 `TOO_MANY_PENDING_JOBS`); 503
`SERVICE_BUSY` with body `retry_after`; `QUEUE_UNAVAILABLE` = not queued (provider-docs §3.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runner.errors import JobFailedError, ProviderResponseError
from runner.plan import JobSpec, Limits, PollPolicy, Rate
from runner.providers.base import (
    ApiError,
    ErrorKind,
    FetchReport,
    ProviderHttp,
    ProviderInfo,
    RemoteRef,
    RemoteState,
    Reply,
    Request,
    ResultSink,
    Status,
    Submitted,
)

INFO = ProviderInfo(
    name="spidra",
    title="Spidra",
    default_base_url="https://api.spidra.io/api",
    api_key_env="SPIDRA_API_KEY",
    job_types=("scrape", "batch", "crawl"),
    default_limits=Limits(requests=Rate(300, 900.0), in_flight=10),
    default_poll=PollPolicy(5.0, 15.0, 1.5),
)

# provider-docs.md §6.2; `queued` is the submit reply's own word, `delayed` is BullMQ's
# "scheduled later" (an inference, §3.3), `running` is the crawl spelling.
_STATES: dict[str, RemoteState] = {
    "queued": RemoteState.QUEUED,
    "waiting": RemoteState.QUEUED,
    "delayed": RemoteState.QUEUED,
    "pending": RemoteState.QUEUED,
    "active": RemoteState.RUNNING,
    "running": RemoteState.RUNNING,
    "completed": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
    "cancelled": RemoteState.CANCELLED,
    "canceled": RemoteState.CANCELLED,
}

# Codes that say "this request was not queued": retrying it cannot double-submit.
_BUSY_CODES = {"QUEUE_UNAVAILABLE", "SERVICE_BUSY", "TOO_MANY_PENDING_JOBS"}


def _body(reply: Reply) -> Mapping[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _object(reply: Reply, what: str) -> Mapping[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        raise ProviderResponseError(f"spidra: {what} is not JSON", reply.excerpt()) from None
    if not isinstance(body, dict):
        raise ProviderResponseError(f"spidra: {what} is not a JSON object", reply.excerpt())
    return body


# -- pure request builders and parsers --------------------------------------------------------


def auth_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


SUPPORTED = ("scrape",)  # the other job types of INFO are a later issue


def build_submit(job: JobSpec) -> Request:
    """The submit request; JobFailedError (nothing sent) for a type not built yet."""
    if job.type not in SUPPORTED:
        raise JobFailedError(f"spidra: job type {job.type!r} is not supported yet (only scrape)")
    return Request("POST", "/scrape", "submit", json=dict(job.params))


def parse_submit(reply: Reply) -> Submitted:
    body = _object(reply, "the submit reply")
    job_id = body.get("jobId")
    if not isinstance(job_id, str) or not job_id:
        raise ProviderResponseError("spidra: the submit reply has no jobId", reply.excerpt())
    raw = str(body.get("status") or "queued")
    return Submitted(RemoteRef(job_id), Status(state_of(raw), raw=raw, payload=body))


def build_poll(ref: RemoteRef) -> Request:
    return Request("GET", f"/scrape/{ref.id}", "status")


def state_of(raw: str) -> RemoteState:
    """Case-insensitive; anything unknown is UNKNOWN (non-terminal)."""
    return _STATES.get(raw.strip().lower(), RemoteState.UNKNOWN)


def parse_status(reply: Reply) -> Status:
    body = _object(reply, "the status reply")
    raw = body.get("status")
    if not isinstance(raw, str):
        raise ProviderResponseError("spidra: the status reply has no status", reply.excerpt())
    state = state_of(raw)
    progress_obj = body.get("progress")
    progress = phase = None
    if isinstance(progress_obj, dict):
        value = progress_obj.get("progress")
        if isinstance(value, int | float) and not isinstance(value, bool):
            progress = float(value)
        message = progress_obj.get("message")
        phase = message if isinstance(message, str) else None
    reason = body.get("error") if isinstance(body.get("error"), str) else None
    partial = False
    if state is RemoteState.SUCCEEDED:
        result = body.get("result")
        if not isinstance(result, dict):
            raise ProviderResponseError(
                "spidra: a completed scrape has no result object", reply.excerpt()
            )
        partial = is_partial(result)
    return Status(
        state,
        raw=raw,
        reason=reason,
        progress=progress,
        partial=partial,
        phase=phase,
        payload=body,
    )


def is_partial(result: Mapping[str, Any]) -> bool:
    """provider-docs.md §3.3: AI extraction failed, or any URL in `data[]` did not succeed."""
    if result.get("ai_extraction_failed") is True:
        return True
    data = result.get("data")
    return isinstance(data, list) and any(
        isinstance(item, dict) and item.get("success") is False for item in data
    )


def classify_error(reply: Reply) -> ApiError:
    """Error body `{status: "error", message, code?, retry_after?}` (§3.4)."""
    body = _body(reply)
    message = str(body.get("message") or reply.excerpt() or f"HTTP {reply.status_code}")
    code = body.get("code") if isinstance(body.get("code"), str) else None
    retry_after = body.get("retry_after")
    hint = float(retry_after) if isinstance(retry_after, int | float) else None
    status = reply.status_code
    kind: ErrorKind
    if code in _BUSY_CODES or (
        status == 503 and (hint is not None or "retry-after" in reply.headers)
    ):
        kind = ErrorKind.BUSY
    elif status == 401:
        kind = ErrorKind.AUTH
    elif status == 402:
        kind = ErrorKind.CREDITS
    elif status == 403:
        # One status, three meanings (provider-docs §3.4 "Conflict on 403"): tell them
        # apart by the message. A credit limit stops submissions; a key problem stops the
        # provider; anything else is this job's own permission problem.
        text = f"{message} {code or ''}".lower()
        if "credit" in text:
            kind = ErrorKind.CREDITS
        elif "key" in text:
            kind = ErrorKind.AUTH
        else:
            kind = ErrorKind.INVALID
    elif status == 429:
        kind = ErrorKind.RATE_LIMITED
    elif status == 404:
        kind = ErrorKind.NOT_FOUND
    elif status == 410:
        kind = ErrorKind.GONE
    elif status >= 500:
        kind = ErrorKind.TRANSIENT
    elif status in (400, 413, 422):
        kind = ErrorKind.INVALID
    else:
        kind = ErrorKind.OTHER
    return ApiError(kind, message, code, hint)


# -- the adapter ------------------------------------------------------------------------------


class SpidraAdapter:
    info = INFO

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return auth_headers(api_key)

    def classify_error(self, reply: Reply) -> ApiError:
        return classify_error(reply)

    async def submit(self, http: ProviderHttp, job: JobSpec) -> Submitted:
        return parse_submit(await http.send(build_submit(job)))

    async def poll(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> Status:
        return parse_status(await http.send(build_poll(ref)))

    async def fetch(
        self,
        http: ProviderHttp,
        job: JobSpec,
        ref: RemoteRef,
        status: Status,
        sink: ResultSink,
    ) -> FetchReport:
        # The result came inline with the final status: nothing more to request.
        result = status.payload.get("result")
        if not isinstance(result, dict):
            raise ProviderResponseError("spidra: a completed scrape has no result object")
        sink.write_result(result)
        data = result.get("data")
        items = data if isinstance(data, list) else []
        failed = sum(1 for item in items if isinstance(item, dict) and item.get("success") is False)
        notes: list[str] = []
        if result.get("ai_extraction_failed") is True:
            notes.append("AI extraction failed; content is the raw page markdown")
        if failed:
            notes.append(f"{failed} of {len(items)} URLs failed")
        stats = result.get("stats")
        outcome = {"tokens": stats.get("totalTokens")} if isinstance(stats, dict) else {}
        return FetchReport(items=1, partial=is_partial(result), notes=tuple(notes), outcome=outcome)

    async def cancel(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> None:
        # A single scrape cannot be cancelled (no endpoint, provider-docs §3.2).
        return None

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        # Single scrapes cannot be listed by request; a human checks /scrape-logs.
        return None


ADAPTER = SpidraAdapter()
