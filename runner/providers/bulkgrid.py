"""Bulkgrid adapter: extract, crawl, deep_crawl and map runs (docs/providers/bulkgrid.md).

Endpoints (paths carry `/api/v1`, the base URL is an origin; auth `x-api-key`):
  POST /api/v1/{extract,crawl,deep-crawl,map}           submit, body + `type` → Run (`id`)
  GET  /api/v1/runs/{id}                                poll → Run + `statistics`
  GET  /api/v1/runs?type=&page=&limit=&orderBy=        list runs, newest first (reconcile)
  GET  /api/v1/runs/{id}/results?page=&limit=           result pages `{results, page, limit, total}`
  GET  /api/v1/runs/{id}/results/{rid}/content?type=    content as text (4 formats), streamed
  GET  /api/v1/runs/{id}/results/{rid}/screenshot       `{signedUrl}` (or `?download=true` bytes)
  POST /api/v1/runs/{id}/retry  `{urls}`                re-run the failed URLs (once)
  POST /api/v1/runs/{id}/cancel (no body)               cancel
Published limits: no numbers, no rate-limit headers documented (docs/providers/bulkgrid.md#limits):
the defaults below are conservative. Query values go out as the SDK sends them (booleans as
`true`/`false`) and never as lists (the SDK's list params are a Python repr,
docs/providers/bulkgrid.md#quirks).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from runner.errors import ErrorKind, JobFailedError, ProviderResponseError, RunnerError
from runner.plan import JobSpec, Limits, PollPolicy, Rate
from runner.providers import listing, replies
from runner.providers.base import ApiError, ProviderHttp, ProviderInfo, Reply, Request, Submitted
from runner.remote import FetchReport, RemoteRef, RemoteState, ResultSink, Status

INFO = ProviderInfo(
    name="bulkgrid",
    title="Bulkgrid",
    default_base_url="https://bulkgrid.com",
    api_key_env="BULKGRID_API_KEY",
    job_types=("extract", "crawl", "deep_crawl", "map"),
    # Neither number is published (docs/providers/bulkgrid.md#limits): conservative starts the
    # runner raises while Bulkgrid accepts and lowers on its 429s.
    default_limits=Limits(
        requests=Rate(5, 1.0),
        in_flight=10,
        origin={"requests": "learned", "in_flight": "learned"},
    ),
    default_poll=PollPolicy(3.0, 15.0, 1.5),
    cancellable=("extract", "crawl", "deep_crawl", "map"),  # every type is a run
    sandbox_api="runner.sandbox.bulkgrid:BulkgridApi",
    typical_duration=60.0,
    result_requests=lambda job: 1,  # the first results page
    estimate_note="bulkgrid: results are the first results page",
)

API = "/api/v1"
SUBMIT_PATHS = {
    "extract": f"{API}/extract",
    "crawl": f"{API}/crawl",
    "deep_crawl": f"{API}/deep-crawl",
    "map": f"{API}/map",
}
PAGE_SIZE = 100  # results and runs per page
RECONCILE_PAGES = 10  # list pages a reconcile may read (it stops at the submit: usually 1)
NEWEST_FIRST = "-created_at"  # the `orderBy` value; the rows' own times are checked anyway
DEFAULT_CONTENT = ("markdown",)  # the schema's default for fetch.content
CONTENT_FORMATS = {"markdown": "md", "cleanHtml": "html", "rawHtml": "html", "links": "txt"}
_STATES = {
    "pending": RemoteState.QUEUED,
    "processing": RemoteState.RUNNING,
    "completed": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
    "cancelled": RemoteState.CANCELLED,
    "canceled": RemoteState.CANCELLED,
}


# -- requests ---------------------------------------------------------------------------------


def run_path(run_id: str, *rest: str) -> str:
    """`/api/v1/runs/{id}/...` with every id percent-encoded as the SDK does (`safe=""`)."""
    parts = [run_id, *rest]
    for part in parts:
        if part in {"", ".", ".."}:
            raise ProviderResponseError(f"bulkgrid: refusing the path segment {part!r}")
    return f"{API}/runs/" + "/".join(quote(part, safe="") for part in parts)


def build_submit(job: JobSpec) -> Request:
    """The submit request: the job's params with `type` added, as the SDK does."""
    body = {**job.params, "type": job.type}
    return Request("POST", SUBMIT_PATHS[job.type], "submit", json=body)


def build_poll(run_id: str) -> Request:
    return Request("GET", run_path(run_id), "status")


def build_results_page(run_id: str, page: int) -> Request:
    params = {"page": str(page), "limit": str(PAGE_SIZE)}
    return Request("GET", run_path(run_id, "results"), "results", params=params)


def content_url(run_id: str, result_id: str, fmt: str) -> str:
    """`/api/v1/runs/{id}/results/{rid}/content?type=<fmt>`, the query already in the URL
    (a streamed download takes a URL, not params): one string value, never a list
    (docs/providers/bulkgrid.md#quirks)."""
    if fmt not in CONTENT_FORMATS:
        raise ProviderResponseError(f"bulkgrid: unknown content format {fmt!r}")
    path = run_path(run_id, "results", result_id, "content")
    return f"{path}?{urlencode({'type': fmt})}"


def build_screenshot(run_id: str, result_id: str, *, download: bool = False) -> Request:
    path = run_path(run_id, "results", result_id, "screenshot")
    if download:
        return Request("GET", path, "download", params={"download": "true"}, expect="bytes")
    return Request("GET", path, "download")


def build_retry(run_id: str, urls: Sequence[str]) -> Request:
    return Request("POST", run_path(run_id, "retry"), "submit", json={"urls": list(urls)})


def build_cancel(run_id: str) -> Request:
    return Request("POST", run_path(run_id, "cancel"), "submit")  # no body (SDK)


def parse_cancel(reply: Reply) -> None:
    """`{"success": true}` is the documented answer; an explicit `success` other than true
    means the run was not cancelled (ProviderResponseError), whatever the HTTP status."""
    try:
        body = reply.json()
    except ValueError:
        return  # a 2xx without a JSON body: nothing says it was refused
    if isinstance(body, Mapping) and "success" in body and body["success"] is not True:
        raise ProviderResponseError("bulkgrid: the cancel was not accepted", reply.excerpt())


def build_list_runs(job_type: str, page: int) -> Request:
    params = {
        "type": job_type,
        "page": str(page),
        "limit": str(PAGE_SIZE),
        "orderBy": NEWEST_FIRST,
    }
    return Request("GET", f"{API}/runs", "status", params=params)


# -- replies ----------------------------------------------------------------------------------


def parse_run_id(body: Any) -> str:
    run = replies.require_object(body, "bulkgrid run")
    run_id = run.get("id")
    if not isinstance(run_id, str) or not run_id:
        raise ProviderResponseError("bulkgrid: the run has no id", replies.excerpt(body))
    return run_id


def failed_count(run: Mapping[str, Any]) -> int:
    """URLs that failed: the larger of the run's `failed` counter and statistics.error_count."""
    stats = run.get("statistics")
    errors = replies.count(stats.get("error_count")) if isinstance(stats, Mapping) else 0
    return max(replies.count(run.get("failed")), errors)


def parse_status(body: Any) -> Status:
    """A Run object (submit, poll or retry reply) as a normalized Status
    (docs/providers/bulkgrid.md#statuses)."""
    run = replies.require_object(body, "bulkgrid run")
    raw = run.get("status")
    if not isinstance(raw, str):
        raise ProviderResponseError("bulkgrid: the run has no status", replies.excerpt(body))
    state = _STATES.get(raw.strip().lower(), RemoteState.UNKNOWN)
    counters = [replies.count(run.get(k)) for k in ("queued", "in_progress", "done", "failed")]
    total = sum(counters)
    progress = (counters[2] + counters[3]) / total if total else None
    if state is RemoteState.SUCCEEDED:
        progress = 1.0
    reason = None
    if state is RemoteState.FAILED:
        code, message = run.get("error_code"), run.get("last_error")
        parts = [str(p) for p in (code, message) if p]
        reason = ": ".join(parts) or None
    failures = failed_count(run)
    return Status(
        state=state,
        raw=raw,
        reason=reason,
        progress=progress,
        partial=state is RemoteState.SUCCEEDED and failures > 0,
        payload=run,
    )


@dataclass(frozen=True, slots=True)
class ResultsPage:
    results: tuple[Mapping[str, Any], ...]
    page: int
    total: int | None  # results in all pages, when the reply says

    def is_last(self, limit: int = PAGE_SIZE) -> bool:
        if not self.results:
            return True
        if self.total is None:
            return len(self.results) < limit
        return self.page * limit >= self.total


def parse_results_page(body: Any, page: int, *, key: str = "results") -> ResultsPage:
    envelope = replies.require_object(body, "bulkgrid page")
    items = envelope.get(key)
    if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
        raise ProviderResponseError(f"bulkgrid: the page has no {key} list", replies.excerpt(body))
    total = envelope.get("total")
    return ResultsPage(
        results=tuple(items),
        page=page,
        total=total if isinstance(total, int) and not isinstance(total, bool) else None,
    )


def failed_urls(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """URLs of results that failed (an `error_message`, or an HTTP status of 400 or more)."""
    urls = []
    for result in results:
        code = result.get("status_code")
        bad_code = isinstance(code, int) and code >= 400
        url = result.get("url")
        if (result.get("error_message") or bad_code) and isinstance(url, str):
            urls.append(url)
    return urls


def content_formats(job: JobSpec) -> tuple[str, ...]:
    """The `fetch.content` formats (default markdown), checked (the schema refuses others)."""
    formats = job.fetch.get("content", DEFAULT_CONTENT)
    unknown = [f for f in formats if f not in CONTENT_FORMATS]
    if unknown:
        raise ProviderResponseError(f"bulkgrid: unknown content format(s) {unknown}")
    return tuple(dict.fromkeys(formats))


def content_name(result_id: str, fmt: str) -> str:
    """`<result-id>.<format>.<ext>`: deterministic, one file per result and format."""
    return f"{result_id}.{fmt}.{CONTENT_FORMATS[fmt]}"


def screenshot_name(result: Mapping[str, Any]) -> str:
    fmt = result.get("screenshot_format")
    ext = fmt.lower().lstrip(".") if isinstance(fmt, str) and fmt.strip() else "png"
    return f"{result['id']}.screenshot.{'jpg' if ext == 'jpeg' else ext}"


def parse_signed_url(body: Any) -> str | None:
    if isinstance(body, Mapping):
        url = body.get("signedUrl")
        if isinstance(url, str) and url:
            return url
    return None


def run_urls(run: Mapping[str, Any]) -> tuple[str, ...]:
    urls = run.get("urls")
    if isinstance(urls, list):
        return tuple(u for u in urls if isinstance(u, str))
    url = run.get("url")
    return (url,) if isinstance(url, str) else ()


def job_urls(job: JobSpec) -> tuple[str, ...]:
    """The URLs a run made from this job lists: `urls` (extract, crawl) or `url`."""
    urls = job.params.get("urls")
    if isinstance(urls, list):
        return tuple(str(u) for u in urls)
    url = job.params.get("url")
    return (str(url),) if url is not None else ()


def listing_page(body: Any, page: int, job: JobSpec) -> listing.Page:
    """A `GET /runs` page as listing rows: a row is this job's when type and URLs agree."""
    parsed = parse_results_page(body, page, key="runs")
    wanted = job_urls(job)
    rows = [
        listing.Row(
            parse_run_id(run),
            replies.parse_time(run.get("created_at")),
            run.get("type") == job.type and run_urls(run) == wanted,
        )
        for run in parsed.results
    ]
    pages = -(-parsed.total // PAGE_SIZE) if parsed.total is not None else None
    return listing.Page(rows, parsed.is_last(), pages)


def classify_error(reply: Reply) -> ApiError:
    """What a non-2xx Bulkgrid reply means (docs/providers/bulkgrid.md#errors,
    docs/engineering.md#error-classes)."""
    message, code = replies.error_text(reply)
    status = reply.status_code
    if status == 401:
        kind = ErrorKind.AUTH
    elif status == 402 or (status == 403 and (code or "").upper().startswith("LIMIT_")):
        kind = ErrorKind.CREDITS  # plan gating (LIMIT_COLLECTIONS, ...)
    elif status == 403:
        kind = ErrorKind.AUTH
    elif status == 404:
        kind = ErrorKind.NOT_FOUND
    elif status == 410:
        kind = ErrorKind.GONE
    elif status == 429:
        kind = ErrorKind.RATE_LIMITED
    elif status == 503 and "retry-after" in reply.headers:
        kind = ErrorKind.BUSY
    elif status >= 500:
        kind = ErrorKind.TRANSIENT
    elif status in {400, 409, 413, 422}:
        kind = ErrorKind.INVALID
    else:
        kind = ErrorKind.OTHER
    return ApiError(kind, message, code=code, retry_after=replies.body_retry_after(reply))


# -- the adapter --------------------------------------------------------------------------------

_SKIPPABLE = {ErrorKind.NOT_FOUND, ErrorKind.GONE, ErrorKind.INVALID}


def _skippable(exc: RunnerError) -> bool:
    """A per-result download that failed for that result only (not the provider, not the
    network): note it, mark the job partial, go on with the next result."""
    error = replies.api_error_of(exc)
    return error.kind in _SKIPPABLE if error is not None else isinstance(exc, JobFailedError)


def result_id(result: Mapping[str, Any]) -> str:
    rid = result.get("id")
    if not isinstance(rid, str) or not rid:
        raise ProviderResponseError("bulkgrid: a result has no id", replies.excerpt(result))
    return rid


def map_links(run: Mapping[str, Any]) -> list[Any] | None:
    """A map run's `result_data.links`, or None when the run object does not carry them."""
    data = run.get("result_data")
    links = data.get("links") if isinstance(data, Mapping) else None
    return links if isinstance(links, list) else None


@dataclass(slots=True)
class _Memory:
    """Per batch, across jobs: the runs this batch submitted, polled or adopted, so a
    reconcile never claims a sibling job's run (two jobs of one type and URLs), and when
    each submit's answer came (the anchors a reconcile stops at, listing.Scan)."""

    ours: set[str] = field(default_factory=set)
    answered: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class _Tally:
    items: int = 0
    files: int = 0
    failed: int = 0
    skipped: list[str] = field(default_factory=list)  # downloads that failed for one result


# Durable notes (ProviderHttp.note) for `retry: failed`: the retry was sent (noted before
# the POST, so it goes out at most once) and the run that carries it (itself or a new one).
NOTE_RETRY_SENT = "retry_sent"
NOTE_RETRY_RUN = "retry_run"


def retry_run(notes: Mapping[str, Any], ref: RemoteRef) -> str:
    """The run to poll and fetch last: the retry's run once one answered, else the job's."""
    run_id = notes.get(NOTE_RETRY_RUN)
    return run_id if isinstance(run_id, str) and run_id else ref.id


class BulkgridAdapter:
    """Composes the builders and parsers above with the engine's gated client."""

    info = INFO

    def __init__(self) -> None:
        self._memory: replies.PerClient[_Memory] = replies.PerClient(_Memory)

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-api-key": api_key, "accept": "application/json"}

    def classify_error(self, reply: Reply) -> ApiError:
        return classify_error(reply)

    async def submit(self, http: ProviderHttp, job: JobSpec) -> Submitted:
        body = replies.reply_json(await http.send(build_submit(job)), "bulkgrid")
        run_id = parse_run_id(body)
        memory = self._memory.of(http)
        memory.ours.add(run_id)
        memory.answered[run_id] = time.time()
        return Submitted(RemoteRef(run_id), parse_status(body))

    async def poll(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> Status:
        current = retry_run(http.notes, ref)  # after a retry, follow the retry's run
        self._memory.of(http).ours.update((ref.id, current))
        body = replies.reply_json(await http.send(build_poll(current)), "bulkgrid")
        status = parse_status(body)
        if job.retry != "failed" or not status.partial or NOTE_RETRY_SENT in http.notes:
            return status
        urls = [url async for url in self._failed_urls(http, ref.id)]
        if not urls:  # nothing to point /retry at: accept the partial success
            return status
        # Noted (journaled) before sending: a lost reply or a crash never leads to a second
        # retry. At most once: a retry whose reply is lost leaves the first run's result.
        http.note(NOTE_RETRY_SENT, True)
        body = replies.reply_json(await http.send(build_retry(ref.id, urls)), "bulkgrid")
        # The reply is a Run: the same run re-opened, or (the sandbox's reading) a new run of
        # just those URLs, which later polls and the fetch follow.
        retried = parse_run_id(body)
        self._memory.of(http).ours.add(retried)
        http.note(NOTE_RETRY_RUN, retried)
        after = parse_status(body)
        # Being re-run even when the reply still shows the old terminal status.
        state = RemoteState.RUNNING if after.state.terminal else after.state
        return Status(
            state, after.raw, progress=after.progress, phase="retrying", payload=after.payload
        )

    async def fetch(
        self,
        http: ProviderHttp,
        job: JobSpec,
        ref: RemoteRef,
        status: Status,
        sink: ResultSink,
    ) -> FetchReport:
        if job.type == "map":
            return await self._fetch_links(http, ref, status, sink)
        tally = _Tally()
        retry = retry_run(http.notes, ref)
        # A retry in a new run: the first run's good results, then all of the retry's.
        await self._fetch_run(http, job, ref.id, sink, tally, keep_failed=retry == ref.id)
        if retry != ref.id:
            await self._fetch_run(http, job, retry, sink, tally, keep_failed=True)
        notes = [f"{tally.failed} of {tally.items} results failed"] if tally.failed else []
        notes += tally.skipped
        return FetchReport(
            items=tally.items,
            files=tally.files,
            partial=status.partial or tally.failed > 0 or bool(tally.skipped),
            notes=tuple(notes),
            outcome={"failed_results": tally.failed},
        )

    async def _fetch_run(
        self,
        http: ProviderHttp,
        job: JobSpec,
        run_id: str,
        sink: ResultSink,
        tally: _Tally,
        *,
        keep_failed: bool,
    ) -> None:
        formats = content_formats(job)
        screenshots = bool(job.fetch.get("screenshots"))
        async for page in self._pages(http, run_id):  # one page in memory at a time
            for result in page.results:
                failed = bool(failed_urls([result]))
                if failed and not keep_failed:  # retried: its new result comes later
                    continue
                sink.append_item(result)
                tally.items += 1
                if failed:  # a failed URL has no content to fetch
                    tally.failed += 1
                    continue
                rid = result_id(result)
                for fmt in formats:
                    # Streamed to disk under the size cap (an API download: the gate's
                    # "download" class, with the key), never held whole in memory.
                    dest = sink.file_path(content_name(rid, fmt))
                    try:
                        await http.download(content_url(run_id, rid, fmt), dest, send_key=True)
                    except RunnerError as exc:
                        if not _skippable(exc):
                            raise
                        tally.skipped.append(f"result {rid}: no {fmt} content ({exc})")
                        continue
                    tally.files += 1
                if screenshots and result.get("screenshot"):
                    try:
                        await self._fetch_screenshot(http, run_id, result, sink)
                    except RunnerError as exc:
                        if not _skippable(exc):
                            raise
                        tally.skipped.append(f"result {rid}: no screenshot ({exc})")
                        continue
                    tally.files += 1

    async def _fetch_screenshot(
        self, http: ProviderHttp, run_id: str, result: Mapping[str, Any], sink: ResultSink
    ) -> None:
        rid = result_id(result)
        reply = await http.send(build_screenshot(run_id, rid))
        signed = parse_signed_url(replies.reply_json(reply, "bulkgrid"))
        if signed is not None:
            # A signed storage URL: the API key must never travel with it.
            await http.download(signed, sink.file_path(screenshot_name(result)), send_key=False)
            return
        raw = await http.send(build_screenshot(run_id, rid, download=True))
        sink.write_file(screenshot_name(result), raw.body)

    async def _fetch_links(
        self, http: ProviderHttp, ref: RemoteRef, status: Status, sink: ResultSink
    ) -> FetchReport:
        links = map_links(status.payload)
        if links is None:  # the status we were handed lacks them: read the run once more
            body = replies.reply_json(await http.send(build_poll(ref.id)), "bulkgrid")
            links = map_links(replies.require_object(body, "bulkgrid run"))
        if links is None:
            raise ProviderResponseError(
                "bulkgrid: the map run has no result_data.links",
                replies.excerpt(status.payload),
            )
        for link in links:
            sink.append_item(link)
        return FetchReport(items=len(links), partial=status.partial)

    async def cancel(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> None:
        INFO.refuse_cancel(job)
        parse_cancel(await http.send(build_cancel(ref.id)))

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        """The run of an unanswered submit, from the run list newest first (listing.look_up):
        found and adopted (ours from now on); NotSubmittedError when the listing back to
        before the submit has none; None (cannot tell) when cut by the page bound."""
        memory = self._memory.of(http)

        async def fetch(page: int) -> listing.Page:
            reply = await http.send(build_list_runs(job.type, page))
            return listing_page(replies.reply_json(reply, "bulkgrid"), page, job)

        found = listing.settle(
            await listing.look_up(
                fetch,
                since=since,
                ours=memory.ours,
                anchors=memory.answered,
                max_pages=RECONCILE_PAGES,
            ),
            f"bulkgrid: no {job.type} run of these URLs was created by the submit",
        )
        if found is None:
            return None
        memory.ours.add(found)
        return RemoteRef(found)

    async def _failed_urls(self, http: ProviderHttp, run_id: str) -> AsyncIterator[str]:
        async for page in self._pages(http, run_id):
            for url in failed_urls(page.results):
                yield url

    async def _pages(self, http: ProviderHttp, run_id: str) -> AsyncIterator[ResultsPage]:
        page = 1
        while True:
            reply = await http.send(build_results_page(run_id, page))
            parsed = parse_results_page(replies.reply_json(reply, "bulkgrid"), page)
            yield parsed
            if parsed.is_last():
                return
            page += 1


ADAPTER = BulkgridAdapter()
