"""Skop adapter: `scrape` jobs that discover documents on a website (docs/providers/skop.md).

Endpoints (base `https://api.skop.dev`; auth `Authorization: Bearer <sk-…>`):
  POST /scrape/                  submit `{website, prompt, parameters?}` → 201 `{job_id}`
  GET  /scrape/status/{job_id}   poll: status, progress 0–100, is_active, has_errors
  GET  /scrape/results/{job_id}  the results document (`documents[]`, totals, cost in USD)
  then each `documents[].url`    the documents themselves, on third-party hosts: no key sent
No cancel and no list endpoint are documented: `cancel` sends nothing and raises
NotCancellableError (the job keeps running on Skop's side until its own
`parameters.timeout`), and `reconcile` finds nothing.
Published limits (docs/providers/skop.md#limits): no rate numbers; 429 `concurrency_limit_exceeded`
when too many jobs run at once; 503 `service_unavailable`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from runner.errors import ErrorKind, ProviderResponseError, RunnerError
from runner.plan import JobSpec, Limits, PollPolicy, Rate
from runner.providers import replies
from runner.providers.base import ApiError, ProviderHttp, ProviderInfo, Reply, Request, Submitted
from runner.remote import FetchReport, RemoteRef, RemoteState, ResultSink, Status

INFO = ProviderInfo(
    name="skop",
    title="Skop",
    default_base_url="https://api.skop.dev",
    api_key_env="SKOP_API_KEY",
    job_types=("scrape",),
    # Neither number is published (docs/providers/skop.md#limits): conservative starts the
    # runner raises while Skop accepts and lowers on its 429s (concurrency_limit_exceeded).
    default_limits=Limits(
        requests=Rate(60, 60.0),
        in_flight=3,
        origin={"requests": "learned", "in_flight": "learned"},
    ),
    default_poll=PollPolicy(10.0, 60.0, 1.5),
    cancellable=(),  # no cancel endpoint is documented
    sandbox_api="runner.sandbox.skop:SkopApi",
    typical_duration=300.0,
    result_requests=lambda job: 1,  # the first results page
    estimate_note="skop: results are the first results page",
    cost_field="cost_usd",  # the results document's cost (docs/providers/skop.md#endpoints)
    cost_unit="USD",
)

DEFAULT_MAX_FILE_SIZE_MB = 100  # Skop's own default for parameters.max_file_size_mb
MB = 1024 * 1024
_STATES = {
    "pending": RemoteState.QUEUED,
    "in_progress": RemoteState.RUNNING,
    "completed": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
    "cancelled": RemoteState.CANCELLED,
    "canceled": RemoteState.CANCELLED,
}


# -- requests ---------------------------------------------------------------------------------


def _job_path(prefix: str, job_id: str) -> str:
    if job_id in {"", ".", ".."}:
        raise ProviderResponseError(f"skop: refusing the job id {job_id!r}")
    return f"{prefix}/{quote(job_id, safe='')}"


def build_submit(job: JobSpec) -> Request:
    return Request("POST", "/scrape/", "submit", json=dict(job.params))


def build_poll(job_id: str) -> Request:
    return Request("GET", _job_path("/scrape/status", job_id), "status")


def build_results(job_id: str) -> Request:
    return Request("GET", _job_path("/scrape/results", job_id), "results")


# -- replies ----------------------------------------------------------------------------------


def parse_job_id(body: Any) -> str:
    obj = replies.require_object(body, "skop: the submit reply")
    job_id = obj.get("job_id")
    if not isinstance(job_id, str) or not job_id:
        raise ProviderResponseError("skop: the submit reply has no job_id", replies.excerpt(body))
    return job_id


def error_summary(errors: Any) -> str | None:
    """`error_type: error_message` of the first error, plus how many more there are."""
    if not isinstance(errors, list) or not errors:
        return None
    first = errors[0] if isinstance(errors[0], Mapping) else {}
    parts = [str(first[k]) for k in ("error_type", "error_message") if first.get(k)]
    text = ": ".join(parts) or "an error"
    return text + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")


def parse_status(body: Any) -> Status:
    """A status (or submit) reply as a Status (docs/providers/skop.md#statuses). A phase outside the
    enum (the docs' own example says `extracting`) is RUNNING while `is_active` is true."""
    obj = replies.require_object(body, "skop: the status reply")
    raw = obj.get("status")
    if not isinstance(raw, str):
        raise ProviderResponseError("skop: the status reply has no status", replies.excerpt(body))
    key = raw.strip().lower()
    state = _STATES.get(key)
    progress = replies.number(obj.get("progress"))
    fraction = None if progress is None else min(max(progress / 100.0, 0.0), 1.0)
    agent = obj.get("current_agent") if isinstance(obj.get("current_agent"), str) else None
    if state is None:
        state = RemoteState.RUNNING if obj.get("is_active") is True else RemoteState.UNKNOWN
        phase: str | None = key
    else:
        phase = agent if state is RemoteState.RUNNING else None
    reason = None
    if state is RemoteState.FAILED:
        reason = error_summary(obj.get("errors")) or _text(obj.get("message"))
    if state is RemoteState.SUCCEEDED:
        fraction = 1.0
    return Status(
        state,
        raw,
        reason=reason,
        progress=fraction,
        partial=state is RemoteState.SUCCEEDED and obj.get("has_errors") is True,
        phase=phase,
        payload=obj,
    )


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def document_name(document: Mapping[str, Any]) -> str:
    """A file name from the document's `name` (else its URL's last path segment), with its
    `document_type` as the extension when missing. The sink sanitizes and numbers it."""
    name = _text(document.get("name"))
    if name is None:
        url = document.get("url")
        path = urlsplit(url).path if isinstance(url, str) else ""
        name = _text(posixpath.basename(unquote(path))) or "document"
    kind = _text(document.get("document_type"))
    if kind and kind.isalnum() and not name.lower().endswith("." + kind.lower()):
        name = f"{name}.{kind.lower()}"
    return name


@dataclass(frozen=True, slots=True)
class Selection:
    """Which documents to download and which were left out, and why."""

    wanted: tuple[Mapping[str, Any], ...]
    low_confidence: tuple[str, ...] = ()  # below fetch.min_confidence: the user's filter
    too_large: tuple[str, ...] = ()  # over parameters.max_file_size_mb
    no_url: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def max_file_size_mb(job: JobSpec) -> float:
    parameters = job.params.get("parameters")
    value = parameters.get("max_file_size_mb") if isinstance(parameters, Mapping) else None
    number = replies.number(value)
    return number if number is not None and number > 0 else DEFAULT_MAX_FILE_SIZE_MB


def select_documents(results: Mapping[str, Any], job: JobSpec) -> Selection:
    documents = results.get("documents")
    if documents is None:
        documents = []
    if not isinstance(documents, list):
        raise ProviderResponseError(
            "skop: the results have no documents list", replies.excerpt(results)
        )
    min_confidence = replies.number(job.fetch.get("min_confidence")) or 0.0
    limit = max_file_size_mb(job)
    wanted: list[Mapping[str, Any]] = []
    low: list[str] = []
    large: list[str] = []
    no_url: list[str] = []
    for document in documents:
        if not isinstance(document, Mapping):
            raise ProviderResponseError(
                "skop: a document is not an object", replies.excerpt(document)
            )
        name = document_name(document)
        confidence = replies.number(document.get("confidence_score"))
        size = replies.number(document.get("file_size_mb"))
        if not isinstance(document.get("url"), str) or not document["url"]:
            no_url.append(name)
        elif confidence is not None and confidence < min_confidence:
            low.append(name)
        elif size is not None and size > limit:
            large.append(name)
        else:
            wanted.append(document)
    notes = []
    if low:
        notes.append(
            f"{len(low)} document(s) below min_confidence {min_confidence:g} not downloaded: "
            + ", ".join(low)
        )
    if large:
        notes.append(
            f"{len(large)} document(s) over max_file_size_mb {limit:g} not downloaded: "
            + ", ".join(large)
        )
    if no_url:
        notes.append(f"{len(no_url)} document(s) without a URL: " + ", ".join(no_url))
    return Selection(tuple(wanted), tuple(low), tuple(large), tuple(no_url), tuple(notes))


def result_notes(results: Mapping[str, Any]) -> tuple[bool, list[str]]:
    """(partial, notes) from what Skop says about its own run: has_errors, success_rate."""
    notes = []
    if results.get("has_errors") is True:
        summary = error_summary(results.get("errors"))
        notes.append(f"Skop reported errors: {summary}" if summary else "Skop reported errors")
    rate = replies.number(results.get("success_rate"))
    if rate is not None and rate < 1:
        notes.append(f"Skop's success rate was {rate:g}")
    return bool(notes), notes


def classify_error(reply: Reply) -> ApiError:
    """docs/providers/skop.md#errors, docs/engineering.md#error-classes."""
    message, code = replies.error_text(reply)
    status = reply.status_code
    if status in {401, 403}:  # a bad key, or one without the scrape:create scope
        kind = ErrorKind.AUTH
    elif status == 402:
        kind = ErrorKind.CREDITS
    elif status == 429:
        busy = code == "concurrency_limit_exceeded"
        kind = ErrorKind.BUSY if busy else ErrorKind.RATE_LIMITED
    elif status == 503:
        kind = ErrorKind.BUSY  # service_unavailable: the job was not created
    elif status == 404:
        kind = ErrorKind.NOT_FOUND
    elif status == 410:
        kind = ErrorKind.GONE
    elif status >= 500:
        kind = ErrorKind.TRANSIENT
    elif status in {400, 413, 422}:
        kind = ErrorKind.INVALID
    else:
        kind = ErrorKind.OTHER
    return ApiError(kind, message, code=code, retry_after=replies.body_retry_after(reply))


# -- the adapter --------------------------------------------------------------------------------


class SkopAdapter:
    """Composes the builders and parsers above with the engine's gated client."""

    info = INFO

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {api_key}"}

    def classify_error(self, reply: Reply) -> ApiError:
        return classify_error(reply)

    async def submit(self, http: ProviderHttp, job: JobSpec) -> Submitted:
        body = replies.reply_json(await http.send(build_submit(job)), "skop")
        return Submitted(RemoteRef(parse_job_id(body)), parse_status(body))

    async def poll(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> Status:
        return parse_status(replies.reply_json(await http.send(build_poll(ref.id)), "skop"))

    async def fetch(
        self,
        http: ProviderHttp,
        job: JobSpec,
        ref: RemoteRef,
        status: Status,
        sink: ResultSink,
    ) -> FetchReport:
        body = replies.reply_json(await http.send(build_results(ref.id)), "skop")
        results = replies.require_object(body, "skop: the results")
        sink.write_result(results)
        partial, notes = result_notes(results)
        partial = partial or status.partial
        files = 0
        outcome: dict[str, Any] = {
            "cost_usd": replies.number(results.get("cost")),
            "documents_found": len(results.get("documents") or []),
        }
        if job.fetch.get("documents", True):
            selection = select_documents(results, job)
            notes.extend(selection.notes)
            partial = partial or bool(selection.too_large or selection.no_url)
            cap = int(max_file_size_mb(job) * MB)
            for document in selection.wanted:
                name = document_name(document)
                try:
                    # Third-party hosts: the key never leaves for them; the cap is hard.
                    await http.download(
                        document["url"], sink.file_path(name), send_key=False, max_bytes=cap
                    )
                except RunnerError as exc:
                    notes.append(f"document {name} could not be downloaded: {exc}")
                    partial = True
                    continue
                files += 1
            outcome["documents_skipped"] = {
                "low_confidence": len(selection.low_confidence),
                "too_large": len(selection.too_large),
            }
        return FetchReport(
            items=0, files=files, partial=partial, notes=tuple(notes), outcome=outcome
        )

    async def cancel(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> None:
        # Skop documents no cancel endpoint (docs/providers/skop.md#cancel): nothing to send. The
        # remote job runs on until done or its own parameters.timeout (at most 1 h).
        INFO.refuse_cancel(job)

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        return None  # no list endpoint documented: an ambiguous submit stays submit_unknown


ADAPTER = SkopAdapter()
