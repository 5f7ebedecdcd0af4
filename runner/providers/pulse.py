"""Pulse adapter: `extract`, `schema`, `split` and `tables` jobs (docs/providers/pulse.md).

Endpoints: `POST /{extract,schema,split,tables}` with `async: true` → `job_id` (`tables_id`
for tables; any 2xx; a reply without an id, or one already terminal, is a synchronous
answer); `GET /job/{job_id}` → status with `result` inline, or `{is_url: true, url}`
pointing at a large result that is single-use and expires (410 Gone) and is therefore
downloaded at once; `DELETE /job/{job_id}` cancels (best effort; the deprecated
`POST /cancel/{job_id}` when DELETE is not there). No list endpoint, so an ambiguous submit
cannot be reconciled.
Auth: `x-api-key`. Published limits: none documented (rate, headers); 429 and 503 exist;
polling with exponential backoff is the vendor's advice (docs/providers/pulse.md#limits).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from runner.errors import (
    ErrorKind,
    JobFailedError,
    NotCancellableError,
    ProviderCallError,
    ProviderResponseError,
)
from runner.plan import JobSpec, Limits, PollPolicy, Rate
from runner.providers import replies
from runner.providers.base import ApiError, ProviderHttp, ProviderInfo, Reply, Request, Submitted
from runner.remote import FetchReport, RemoteRef, RemoteState, ResultSink, Status

INFO = ProviderInfo(
    name="pulse",
    title="Pulse",
    default_base_url="https://api.runpulse.com",
    api_key_env="PULSE_API_KEY",
    job_types=("extract", "schema", "split", "tables"),
    # Neither number is published (docs/providers/pulse.md#limits): conservative starts the
    # runner raises while Pulse accepts and lowers on its 429s.
    default_limits=Limits(
        requests=Rate(10, 1.0),
        in_flight=20,
        origin={"requests": "learned", "in_flight": "learned"},
    ),
    default_poll=PollPolicy(2.0, 30.0, 1.5),
    cancellable=("extract", "schema", "split", "tables"),  # DELETE /job/{id}, best effort
    sandbox_api="runner.sandbox.pulse:PulseApi",
    typical_duration=60.0,  # results come inline with the status: no result request
)

# docs/providers/pulse.md#statuses. Job status says `canceled`; older docs say `cancelled`.
_STATES: dict[str, RemoteState] = {
    "pending": RemoteState.QUEUED,
    "queued": RemoteState.QUEUED,
    "processing": RemoteState.RUNNING,
    "completed": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
    "canceled": RemoteState.CANCELLED,
    "cancelled": RemoteState.CANCELLED,
    "expired": RemoteState.EXPIRED,
}

LARGE_RESULT_FILE = "result.json"  # the downloaded {is_url} payload, under files/
SYNC_REF = "sync"  # the remote id of a job the engine answered synchronously
SYNC_NO_CANCEL = "Pulse answered this job synchronously: no remote job to cancel"


def state_of(raw: str) -> RemoteState:
    """After strip and lower case, like the CLI; anything unknown is UNKNOWN."""
    return _STATES.get(raw.strip().lower(), RemoteState.UNKNOWN)


def _object(reply: Reply, what: str) -> Mapping[str, Any]:
    return replies.json_object(reply, f"pulse: {what}")


# -- pure request builders and parsers --------------------------------------------------------


def auth_headers(api_key: str) -> dict[str, str]:
    return {"x-api-key": api_key}


def build_submit(job: JobSpec) -> Request:
    """`POST /{type}`, always asynchronous; JobFailedError (nothing sent) for a type Pulse
    does not have."""
    if job.type not in INFO.job_types:
        raise JobFailedError(f"pulse: unknown job type {job.type!r}")
    return Request("POST", f"/{job.type}", "submit", json={**job.params, "async": True})


def parse_submit(reply: Reply) -> Submitted:
    body = _object(reply, "the submit reply")
    job_id = body.get("job_id")
    if job_id is None:
        job_id = body.get("tables_id")
    if job_id is None:
        raw = body.get("status")
        if isinstance(raw, str) and not state_of(raw).terminal:
            # An async envelope without its id: a job may run that we cannot follow, and
            # this body is no result. Never recorded as a (synchronous) success.
            raise ProviderResponseError("pulse: the submit reply has no job_id", reply.excerpt())
        # A synchronous answer: the body is the result itself (docs/providers/pulse.md#endpoints).
        payload = {"status": "completed", "result": dict(body)}
        answer = Status(RemoteState.SUCCEEDED, raw="completed", payload=payload)
        return Submitted(RemoteRef(SYNC_REF, {"sync": True}), answer)
    if not isinstance(job_id, str | int) or isinstance(job_id, bool) or job_id == "":
        raise ProviderResponseError(
            "pulse: the submit reply has an unusable job_id", reply.excerpt()
        )
    raw = body.get("status")
    observed = _status(body, raw, reply) if isinstance(raw, str) else None
    return Submitted(RemoteRef(str(job_id)), observed)


def _id(ref: RemoteRef) -> str:
    if ref.id in {"", ".", ".."}:
        raise ProviderResponseError(f"pulse: refusing the id {ref.id!r}")
    return quote(ref.id, safe="")


def build_poll(ref: RemoteRef) -> Request:
    return Request("GET", f"/job/{_id(ref)}", "status")


def build_cancel(ref: RemoteRef) -> Request:
    return Request("DELETE", f"/job/{_id(ref)}", "status")


def build_cancel_legacy(ref: RemoteRef) -> Request:
    return Request("POST", f"/cancel/{_id(ref)}", "status")  # deprecated, no body


def parse_status(reply: Reply) -> Status:
    body = _object(reply, "the status reply")
    raw = body.get("status")
    if not isinstance(raw, str):
        raise ProviderResponseError("pulse: the status reply has no status", reply.excerpt())
    return _status(body, raw, reply)


def _status(body: Mapping[str, Any], raw: str, reply: Reply) -> Status:
    state = state_of(raw)
    error = body.get("error")
    reason = error if isinstance(error, str) else None
    if isinstance(error, dict):
        reason = str(error.get("message") or error.get("code") or "") or None
    results_ready = True
    if state is RemoteState.SUCCEEDED:
        result = body.get("result")
        if not isinstance(result, dict):
            raise ProviderResponseError(
                "pulse: a completed job has no result object", reply.excerpt()
            )
        if result.get("is_url") is True and not isinstance(result.get("url"), str):
            raise ProviderResponseError("pulse: a large result has no url", reply.excerpt())
    elif state is RemoteState.EXPIRED:
        results_ready = False  # the result is only a retention stub
    return Status(state, raw=raw, reason=reason, results_ready=results_ready, payload=body)


def error_parts(body: Any) -> tuple[str | None, str | None]:
    """(code, message) from any of the three error envelopes (docs/providers/pulse.md#errors)."""
    if not isinstance(body, dict):
        return None, None
    error = body.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message")
        return (str(code) if code else None, str(message) if message else None)
    if isinstance(error, str):
        return None, error
    detail = body.get("detail")
    if detail is not None:
        return None, detail if isinstance(detail, str) else str(detail)
    message = body.get("message")
    return None, str(message) if message else None


def classify_error(reply: Reply) -> ApiError:
    try:
        body = reply.json()
    except ValueError:
        body = None
    code, message = error_parts(body)
    text = message or reply.excerpt() or f"HTTP {reply.status_code}"
    status = reply.status_code
    code_upper = (code or "").upper()
    kind: ErrorKind
    if status == 401 or (code_upper.startswith("AUTH_00") and code_upper != "AUTH_004"):
        kind = ErrorKind.AUTH
    elif status == 402 or code_upper.startswith("BILLING_"):
        kind = ErrorKind.CREDITS
    elif status == 403:
        kind = ErrorKind.AUTH if code_upper == "AUTH_004" or not code_upper else ErrorKind.INVALID
    elif status == 429 or code_upper in ("RATE_001", "GENERAL_004"):
        kind = ErrorKind.RATE_LIMITED
    elif status == 503 and "retry-after" in reply.headers:
        kind = ErrorKind.BUSY
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
    return ApiError(kind, text, code)


def result_outcome(result: Mapping[str, Any]) -> dict[str, Any]:
    """What job.json keeps of a result: pages billed and the ids later jobs chain on."""
    outcome: dict[str, Any] = {}
    pages = result.get("page_count")
    plan = result.get("plan-info")
    if not isinstance(pages, int) and isinstance(plan, Mapping):
        pages = plan.get("pages_used")
    if isinstance(pages, int) and not isinstance(pages, bool):
        outcome["pages"] = pages
    for key in ("extraction_id", "split_id"):
        if isinstance(result.get(key), str):
            outcome[key] = result[key]
    tables = result.get("tables_output")
    if isinstance(tables, list):
        outcome["tables"] = len(tables)
    return outcome


# -- the adapter ------------------------------------------------------------------------------


class PulseAdapter:
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
        result = status.payload.get("result")
        if not isinstance(result, dict):
            raise ProviderResponseError("pulse: a completed job has no result object")
        if result.get("is_url") is True:
            # Single-use and short-lived (docs/providers/pulse.md#results-and-downloads): download
            # now, into files/. The key goes along only to the provider's own API host; http
            # enforces that.
            dest = sink.file_path(LARGE_RESULT_FILE)
            size = await http.download(str(result["url"]), dest, send_key=True)
            return FetchReport(
                files=1,
                notes=(f"large result downloaded to files/{dest.name}",),
                outcome={"result_bytes": size},
            )
        sink.write_result(result)
        return FetchReport(items=1, outcome=result_outcome(result))

    async def cancel(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> None:
        INFO.refuse_cancel(job)
        if ref.extra.get("sync"):
            raise NotCancellableError(SYNC_NO_CANCEL)
        try:
            await http.send(build_cancel(ref))
        except ProviderCallError as exc:
            # An engine without DELETE /job answers 404/405: the older cancel path.
            if exc.status_code not in (404, 405):
                raise
            await http.send(build_cancel_legacy(ref))

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        return None  # no list endpoint (docs/engineering.md#error-classes)


ADAPTER = PulseAdapter()
