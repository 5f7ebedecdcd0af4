"""Spidra adapter: `scrape`, `batch` and `crawl` jobs (docs/providers/spidra.md).

Endpoints (base `…/api`):
  POST /scrape → jobId; GET /scrape/{id}      result inline; no cancel, no list
  POST /batch/scrape {urls ≤ 50} → batchId    GET /batch/scrape/{id}: items inline, each with
                                              its own status; DELETE cancels; POST …/retry
                                              re-runs the failed items; GET /batch/scrape
                                              ?page=&limit= lists batches (reconcile)
  POST /crawl → jobId; GET /crawl/{id}        first 100 pages inline, `resultTruncated` beyond;
                                              GET /crawl/{id}/pages?offset=&limit≤1000 pages
                                              the rest; page html/markdown are signed URLs
                                              valid 1 h; DELETE cancels; GET /crawl/history
                                              lists crawls (reconcile)
Auth: `Authorization: Bearer <key>` (the SDK's header; the docs' `x-api-key` also works).
Published limits: 300 requests per IP per 15 min counting polls, `RateLimit-*` headers
(draft 6, reset in unix time); 10 pending scrapes (429 `TOO_MANY_PENDING_JOBS`); 503
`SERVICE_BUSY` with body `retry_after`; `QUEUE_UNAVAILABLE` = not queued
(docs/providers/spidra.md#limits).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from runner.errors import ErrorKind, JobFailedError, ProviderResponseError, RunnerError
from runner.plan import JobSpec, Limits, PollPolicy, Rate
from runner.providers import listing, replies
from runner.providers.base import ApiError, ProviderHttp, ProviderInfo, Reply, Request, Submitted
from runner.remote import FetchReport, RemoteRef, RemoteState, ResultSink, Status

INFO = ProviderInfo(
    name="spidra",
    title="Spidra",
    default_base_url="https://api.spidra.io/api",
    api_key_env="SPIDRA_API_KEY",
    job_types=("scrape", "batch", "crawl"),
    default_limits=Limits(
        requests=Rate(300, 900.0),
        in_flight=10,
        origin={"requests": "published", "in_flight": "published"},
    ),
    default_poll=PollPolicy(5.0, 15.0, 1.5),
    cancellable=("batch", "crawl"),  # DELETE; a single scrape has no cancel endpoint
    sandbox_api="runner.sandbox.spidra:SpidraApi",
    typical_duration=30.0,
    # scrape and batch return results inline; a crawl's pages are one more request
    result_requests=lambda job: int(job.fetch.get("pages", True)) if job.type == "crawl" else 0,
    estimate_note="spidra: a crawl's results are its first pages request",
    # a batch's items' creditsUsed (docs/providers/spidra.md#results-and-downloads)
    cost_field="credits_used",
)

# docs/providers/spidra.md#statuses; `queued` is the submit reply's own word, `delayed` is BullMQ's
# "scheduled later" (an inference, docs/providers/spidra.md#statuses), `running` is the crawl
# spelling.
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
    return replies.json_object(reply, f"spidra: {what}")


# -- pure request builders and parsers --------------------------------------------------------


def auth_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


SUBMIT_PATHS = {"scrape": "/scrape", "batch": "/batch/scrape", "crawl": "/crawl"}
ID_FIELDS = {"scrape": "jobId", "batch": "batchId", "crawl": "jobId"}
DEFAULT_CRAWL_INSTRUCTION = "Find all pages on the website"  # the SDK always sends one
PAGES_LIMIT = 1000  # the documented maximum per /crawl/{id}/pages request
LIST_LIMIT = 50  # rows per batch list / crawl history page when reconciling
RECONCILE_PAGES = 4  # list pages examined (each costs a request of the 300/15 min budget)
RECONCILE_DETAILS = 5  # candidate batches read in full to compare their URLs
MAX_NOTES = 20  # per-page download problems listed in job.json (then a count)
# Durable notes (ProviderHttp.note) for a batch's `retry: failed`.
NOTE_RETRY_SENT = "retry_sent"  # {item uuid: finishedAt} of the failed items, before the POST
NOTE_RETRIED = "retried"  # the reply's retriedCount


def _id(value: str) -> str:
    if value in {"", ".", ".."}:
        raise ProviderResponseError(f"spidra: refusing the id {value!r}")
    return quote(value, safe="")


def build_submit(job: JobSpec) -> Request:
    """The submit request: the params as the body (plus the crawl instruction the SDK
    always sends); JobFailedError, before sending, for a type Spidra does not have."""
    path = SUBMIT_PATHS.get(job.type)
    if path is None:
        raise JobFailedError(f"spidra: unknown job type {job.type!r}")
    body = dict(job.params)
    if job.type == "crawl":
        body.setdefault("crawlInstruction", DEFAULT_CRAWL_INSTRUCTION)
    return Request("POST", path, "submit", json=body)


def parse_submit(reply: Reply, kind: str = "scrape") -> Submitted:
    body = _object(reply, "the submit reply")
    name = ID_FIELDS.get(kind, "jobId")
    job_id = body.get(name)
    if not isinstance(job_id, str) or not job_id:
        raise ProviderResponseError(f"spidra: the submit reply has no {name}", reply.excerpt())
    raw = str(body.get("status") or "queued")
    return Submitted(RemoteRef(job_id), Status(state_of(raw), raw=raw, payload=body))


def build_poll(ref: RemoteRef, kind: str = "scrape") -> Request:
    return Request("GET", f"{SUBMIT_PATHS[kind]}/{_id(ref.id)}", "status")


def build_cancel(ref: RemoteRef, kind: str) -> Request:
    return Request("DELETE", f"{SUBMIT_PATHS[kind]}/{_id(ref.id)}", "status")


def build_retry(ref: RemoteRef) -> Request:
    return Request("POST", f"/batch/scrape/{_id(ref.id)}/retry", "submit", json={})


def build_crawl_pages(ref: RemoteRef, offset: int) -> Request:
    params = {"offset": str(offset), "limit": str(PAGES_LIMIT)}
    return Request("GET", f"/crawl/{_id(ref.id)}/pages", "results", params=params)


def build_list(kind: str, page: int) -> Request:
    path = "/batch/scrape" if kind == "batch" else "/crawl/history"
    return Request("GET", path, "status", params={"page": str(page), "limit": str(LIST_LIMIT)})


def state_of(raw: str) -> RemoteState:
    """Case-insensitive; anything unknown is UNKNOWN (non-terminal)."""
    return _STATES.get(raw.strip().lower(), RemoteState.UNKNOWN)


def parse_status(reply: Reply, kind: str = "scrape") -> Status:
    body = _object(reply, "the status reply")
    raw = body.get("status")
    if not isinstance(raw, str):
        raise ProviderResponseError("spidra: the status reply has no status", reply.excerpt())
    if kind == "batch":
        return batch_status(body, raw)
    if kind == "crawl":
        return crawl_status(body, raw)
    state = state_of(raw)
    progress, phase = _progress(body)
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
    """docs/providers/spidra.md#statuses: AI extraction failed, or any URL in `data[]` did not
    succeed."""
    if result.get("ai_extraction_failed") is True:
        return True
    data = result.get("data")
    return isinstance(data, list) and any(
        isinstance(item, dict) and item.get("success") is False for item in data
    )


def _progress(body: Mapping[str, Any]) -> tuple[float | None, str | None]:
    progress_obj = body.get("progress")
    if not isinstance(progress_obj, dict):
        return None, None
    value = replies.number(progress_obj.get("progress"))
    message = progress_obj.get("message")
    return value, message if isinstance(message, str) else None


def batch_items(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    items = body.get("items")
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise ProviderResponseError("spidra: the batch has no items list", replies.excerpt(body))
    return items


def failed_items(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [i for i in batch_items(body) if replies.lower(i.get("status")) == "failed"]


def batch_status(body: Mapping[str, Any], raw: str) -> Status:
    """A batch: done when terminal; partial when it completed with failed items."""
    state = state_of(raw)
    total = replies.count(body.get("totalUrls"))
    done = replies.count(body.get("completedCount"))
    failed = replies.count(body.get("failedCount"))
    progress = min(1.0, (done + failed) / total) if total else None
    reason = None
    if state.terminal:
        items = batch_items(body)  # a finished batch without its items is unreadable
        if state is RemoteState.FAILED:
            errors = [i.get("error") for i in items if isinstance(i.get("error"), str)]
            reason = f"all {failed or len(items)} items failed" + (
                f" (first: {errors[0]})" if errors else ""
            )
    return Status(
        state,
        raw=raw,
        reason=reason,
        progress=1.0 if state is RemoteState.SUCCEEDED else progress,
        partial=state is RemoteState.SUCCEEDED and failed > 0,
        phase=f"{done + failed} of {total} URLs done" if total else None,
        payload=body,
    )


def crawl_status(body: Mapping[str, Any], raw: str) -> Status:
    state = state_of(raw)
    progress, phase = _progress(body)
    reason = body.get("error") if isinstance(body.get("error"), str) else None
    if state.terminal and not isinstance(body.get("result") or [], list):
        raise ProviderResponseError("spidra: the crawl result is not a list", replies.excerpt(body))
    result = body.get("result")
    inline: list[Any] = result if isinstance(result, list) else []
    partial = state is RemoteState.SUCCEEDED and any(
        isinstance(p, Mapping) and page_failed(p) for p in inline
    )
    return Status(
        state,
        raw=raw,
        reason=reason,
        progress=1.0 if state is RemoteState.SUCCEEDED else progress,
        partial=partial,
        phase=phase,
        payload=body,
    )


def page_failed(page: Mapping[str, Any]) -> bool:
    return replies.lower(page.get("status")) == "failed"


def crawl_page_line(page: Mapping[str, Any]) -> dict[str, Any]:
    """One crawl page as a results.jsonl line: inline and /pages rows in one shape (`data`
    as JSON, not the JSON text /pages sends)."""
    line = dict(page)
    data = line.get("data")
    if isinstance(data, str):
        with contextlib.suppress(ValueError):  # not JSON after all: kept as the text
            line["data"] = json.loads(data)
    return line


def page_links(page: Mapping[str, Any]) -> dict[str, str]:
    """The page's signed content URLs by format (`html`/`markdown`, or `*_url`)."""
    links = {}
    for fmt in ("html", "markdown"):
        url = page.get(fmt) or page.get(f"{fmt}_url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            links[fmt] = url
    return links


PAGE_EXTENSIONS = {"html": "html", "markdown": "md"}


def page_file_name(number: int, fmt: str) -> str:
    """`page-00001.html`: numbered like the page's line in results.jsonl (1-based)."""
    return f"page-{number:05d}.{PAGE_EXTENSIONS[fmt]}"


def batch_line(item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: item.get(key) for key in ("url", "status", "result", "error")}


def list_rows(body: Any, what: str) -> tuple[list[Mapping[str, Any]], bool]:
    """(rows, last page?) of a batch list / crawl history page."""
    rows, last, _ = list_page(body, what)
    return rows, last


def list_page(body: Any, what: str) -> tuple[list[Mapping[str, Any]], bool, int | None]:
    """(rows, last page?, how many pages) of a batch list / crawl history page."""
    envelope = replies.require_object(body, f"spidra: the {what}")
    rows = envelope.get("jobs")
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise ProviderResponseError(f"spidra: the {what} has no jobs list", replies.excerpt(body))
    paging = envelope.get("pagination")
    source = paging if isinstance(paging, Mapping) else envelope
    page, listed = source.get("page"), source.get("totalPages")
    pages = listed if isinstance(listed, int) and not isinstance(listed, bool) else None
    last = not rows or (isinstance(page, int) and pages is not None and page >= pages)
    return rows, last or len(rows) < LIST_LIMIT, pages


def row_id(row: Mapping[str, Any]) -> str | None:
    for key in ("batchId", "jobId", "id"):
        value = row.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def row_created(row: Mapping[str, Any]) -> float | None:
    return replies.parse_time(row.get("createdAt")) or replies.parse_time(row.get("created_at"))


def row_match(row: Mapping[str, Any], job: JobSpec) -> bool | None:
    """Is a listed batch / crawl this job's? None: a batch whose URLs are not listed (and
    whose count agrees) must be read in full to tell."""
    if job.type == "crawl":
        base = row.get("baseUrl") or row.get("base_url") or row.get("url")
        return bool(base == job.params.get("baseUrl"))
    urls = list(job.params.get("urls") or [])
    total = row.get("totalUrls")
    if isinstance(total, int) and not isinstance(total, bool) and total != len(urls):
        return False
    listed = row.get("urls")
    return list(listed) == urls if isinstance(listed, list) else None


def listing_page(body: Any, job: JobSpec) -> listing.Page:
    what = "batch list" if job.type == "batch" else "crawl history"
    rows, last, pages = list_page(body, what)
    parsed = [
        listing.Row(found, row_created(row), row_match(row, job))
        for row in rows
        if (found := row_id(row)) is not None
    ]
    return listing.Page(parsed, last, pages)


def batch_urls_match(body: Any, job: JobSpec) -> bool:
    items = batch_items(replies.require_object(body, "spidra: the batch"))
    return [i.get("url") for i in items] == list(job.params.get("urls") or [])


def error_message(reply: Reply, body: Mapping[str, Any]) -> str:
    """As the SDK reads it (docs/providers/spidra.md#errors): `message`, else the `errors` list
    joined (422 validation), else the body itself."""
    message = body.get("message")
    if isinstance(message, str) and message.strip():
        return message
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(str(e) for e in errors)
    return reply.excerpt() or f"HTTP {reply.status_code}"


def classify_error(reply: Reply) -> ApiError:
    """Error body `{status: "error", message, code?, errors?, retry_after?}`
    (docs/providers/spidra.md#errors)."""
    body = _body(reply)
    message = error_message(reply, body)
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
        # One status, three meanings (docs/providers/spidra.md#errors): tell them
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

_SKIPPABLE = {ErrorKind.NOT_FOUND, ErrorKind.GONE, ErrorKind.INVALID}


@dataclass(slots=True)
class _Memory:
    """Per batch, across jobs: batch and crawl ids this batch submitted or polled, so a
    reconcile never claims a sibling job's remote job, and when each submit's answer came
    (the anchors a reconcile stops at, listing.Scan)."""

    ours: set[str] = field(default_factory=set)
    answered: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Tally:
    lines: int = 0
    files: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_NOTES:
            self.problems.append(text)
        elif len(self.problems) == MAX_NOTES:
            self.problems.append("more page files could not be downloaded (not listed)")

    def report(self, status: Status, notes: list[str], outcome: dict[str, Any]) -> FetchReport:
        """Partial when the provider said so, an item failed, or a download did not land."""
        return FetchReport(
            items=self.lines,
            files=self.files,
            partial=status.partial or self.failed > 0 or bool(self.problems),
            notes=tuple(notes + self.problems),
            outcome=outcome,
        )


class SpidraAdapter:
    info = INFO

    def __init__(self) -> None:
        self._memory: replies.PerClient[_Memory] = replies.PerClient(_Memory)

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return auth_headers(api_key)

    def classify_error(self, reply: Reply) -> ApiError:
        return classify_error(reply)

    async def submit(self, http: ProviderHttp, job: JobSpec) -> Submitted:
        submitted = parse_submit(await http.send(build_submit(job)), job.type)
        memory = self._memory.of(http)
        memory.ours.add(submitted.ref.id)
        memory.answered[submitted.ref.id] = time.time()
        return submitted

    async def poll(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> Status:
        self._memory.of(http).ours.add(ref.id)
        status = parse_status(await http.send(build_poll(ref, job.type)), job.type)
        if job.type == "batch" and job.retry == "failed":
            return await self._retry_failed(http, ref, status)
        return status

    async def _retry_failed(self, http: ProviderHttp, ref: RemoteRef, status: Status) -> Status:
        """`retry: failed`: once the batch ends with failed items, POST …/retry exactly once
        (noted before sending, so never twice even across a crash), then poll until the
        retried items finish again."""
        if not status.state.terminal or status.state is RemoteState.CANCELLED:
            return status
        sent = http.notes.get(NOTE_RETRY_SENT)
        if sent is None:
            failed = failed_items(status.payload)
            if not failed:
                return status
            http.note(NOTE_RETRY_SENT, {str(i.get("uuid")): i.get("finishedAt") for i in failed})
            body = replies.reply_json(await http.send(build_retry(ref)), "spidra")
            retried = replies.count(
                replies.require_object(body, "spidra: retry").get("retriedCount")
            )
            http.note(NOTE_RETRIED, retried)
            if retried == 0:
                return status
            return _retrying(status)
        # A terminal answer that still shows a retried item's old failure is from before the
        # retry took hold (only waited for when the retry's reply said it re-ran some).
        if isinstance(sent, Mapping) and replies.count(http.notes.get(NOTE_RETRIED)) > 0:
            for item in failed_items(status.payload):
                uuid = str(item.get("uuid"))
                if uuid in sent and sent[uuid] == item.get("finishedAt"):
                    return _retrying(status)
        return status

    async def fetch(
        self,
        http: ProviderHttp,
        job: JobSpec,
        ref: RemoteRef,
        status: Status,
        sink: ResultSink,
    ) -> FetchReport:
        if job.type == "batch":
            return await self._fetch_batch(http, job, status, sink)
        if job.type == "crawl":
            return await self._fetch_crawl(http, job, ref, status, sink)
        # A single scrape's result came inline with the final status: nothing to request.
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

    async def _fetch_batch(
        self, http: ProviderHttp, job: JobSpec, status: Status, sink: ResultSink
    ) -> FetchReport:
        """One results.jsonl line per item, in the batch's order; screenshots on request."""
        tally = _Tally()
        credits = 0
        screenshots = bool(job.fetch.get("screenshots"))
        items = batch_items(status.payload)
        for number, item in enumerate(items, start=1):
            line = batch_line(item)
            credits += replies.count(item.get("creditsUsed"))
            if replies.lower(item.get("status")) != "completed":
                tally.failed += 1
            shot = item.get("screenshotUrl")
            if screenshots and isinstance(shot, str) and shot:
                name = await self._download(
                    http, shot, sink, f"item-{number:03d}.png", tally, f"item {number}"
                )
                if name is not None:
                    line["screenshot"] = f"files/{name}"
            sink.append_item(line)
            tally.lines += 1
        notes = [f"{tally.failed} of {len(items)} items failed"] if tally.failed else []
        outcome = {
            "total_urls": len(items),
            "failed_items": tally.failed,
            "retried_items": http.notes.get(NOTE_RETRIED),
            "credits_used": credits,
        }
        return tally.report(status, notes, outcome)

    async def _fetch_crawl(
        self, http: ProviderHttp, job: JobSpec, ref: RemoteRef, status: Status, sink: ResultSink
    ) -> FetchReport:
        """Inline pages (the first 100), then /pages from there while `resultTruncated`;
        each page's signed html/markdown links downloaded at once (they live 1 h)."""
        write_lines = bool(job.fetch.get("pages", True))
        formats = [f for f in ("html", "markdown") if job.fetch.get(f)]
        tally = _Tally()
        number = 0
        async for page in self._crawl_pages(http, ref, status):
            number += 1
            line = crawl_page_line(page)
            if page_failed(page):
                tally.failed += 1
            links = page_links(page)
            for fmt in formats:
                if fmt not in links:
                    continue
                name = await self._download(
                    http, links[fmt], sink, page_file_name(number, fmt), tally, f"page {number}"
                )
                if name is not None:
                    line.setdefault("files", {})[fmt] = f"files/{name}"
            if write_lines:
                sink.append_item(line)
                tally.lines += 1
        notes = [f"{tally.failed} of {number} pages failed"] if tally.failed else []
        outcome = {"pages": number, "failed_pages": tally.failed}
        return tally.report(status, notes, outcome)

    async def _crawl_pages(
        self, http: ProviderHttp, ref: RemoteRef, status: Status
    ) -> AsyncIterator[Mapping[str, Any]]:
        inline = status.payload.get("result")
        inline = inline if isinstance(inline, list) else []
        for page in inline:
            if isinstance(page, Mapping):
                yield page
        if status.payload.get("resultTruncated") is not True:
            return
        offset = len(inline)
        while True:  # one page of up to 1,000 rows in memory at a time
            body = replies.reply_json(await http.send(build_crawl_pages(ref, offset)), "spidra")
            envelope = replies.require_object(body, "spidra: the crawl pages")
            rows = envelope.get("pages")
            if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
                raise ProviderResponseError(
                    "spidra: the crawl pages reply has no pages list", replies.excerpt(body)
                )
            for row in rows:
                yield row
            offset += len(rows)
            if not rows or envelope.get("hasMore") is not True:
                return

    async def _download(
        self,
        http: ProviderHttp,
        url: str,
        sink: ResultSink,
        name: str,
        tally: _Tally,
        what: str,
    ) -> str | None:
        """A signed link into files/ (no key); a link that is gone or refused is noted and
        the job marked partial, the fetch goes on."""
        path = sink.file_path(name)
        try:
            await http.download(url, path, send_key=False)
        except RunnerError as exc:
            error = replies.api_error_of(exc)
            if error is None or error.kind not in _SKIPPABLE:
                raise
            tally.problem(f"{what}: {name} could not be downloaded ({exc})")
            return None
        tally.files += 1
        return path.name

    async def cancel(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> None:
        INFO.refuse_cancel(job)  # a single scrape has no cancel endpoint: nothing is sent
        await http.send(build_cancel(ref, job.type))

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        """Batches from GET /batch/scrape, crawls from GET /crawl/history, read from their
        newest end (listing.look_up): found and adopted; NotSubmittedError when the listing
        back to before the submit has none; None (cannot tell) when cut by a bound. Single
        scrapes cannot be listed: always None."""
        if job.type == "scrape":
            return None
        memory = self._memory.of(http)

        async def fetch(page: int) -> listing.Page:
            body = replies.reply_json(await http.send(build_list(job.type, page)), "spidra")
            return listing_page(body, job)

        async def confirm(batch_id: str) -> bool:
            detail = await http.send(build_poll(RemoteRef(batch_id), "batch"))
            return batch_urls_match(replies.reply_json(detail, "spidra"), job)

        what = "batch of these URLs" if job.type == "batch" else "crawl of this baseUrl"
        found = listing.settle(
            await listing.look_up(
                fetch,
                since=since,
                ours=memory.ours,
                anchors=memory.answered,
                max_pages=RECONCILE_PAGES,
                confirm=confirm,
                max_confirms=RECONCILE_DETAILS,
            ),
            f"spidra: no {what} was created by the submit",
        )
        if found is None:
            return None
        memory.ours.add(found)
        return RemoteRef(found)


def _retrying(status: Status) -> Status:
    """Being re-run, whatever the (old) terminal status said."""
    return Status(
        RemoteState.RUNNING,
        status.raw,
        progress=status.progress,
        phase="retrying failed items",
        payload=status.payload,
    )


ADAPTER = SpidraAdapter()
