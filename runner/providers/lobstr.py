"""Lobstr.io adapter: `run` jobs (squid + tasks → run; docs/providers/lobstr.md).

Endpoints (base `…/v1`; auth `Authorization: Token <key>`):
  POST /squids {crawler, name?}            create a squid (only when the job names a crawler)
  POST /squids/{id} {params, concurrency…} configure it (full replace)
  POST /tasks {squid, tasks}               add tasks → `duplicated_count`
  POST /runs {squid}                       start the run → `id` (the only step that creates
                                           the remote job; one active run per squid)
  GET  /runs/{id}                          poll: status, done_reason, export_done
  GET  /runs/{id}/stats                    progress (`percent_done` "42%"), only while running
  GET  /runs?squid=&page=&limit=           list a squid's runs (reconcile, RunInProgress)
  GET  /results?run=&page=&page_size=&limit=   result pages, at most 100 rows each
  GET  /runs/{id}/download → {s3}          CSV export (signed URL, fetched without the key)
  POST /runs/{id}/abort (no body)          cancel
Published limits (docs/providers/lobstr.md#limits): /squids 120/min, /tasks 90/min, /runs 120/min,
/results 2 requests/second; `X-RateLimit-*` and `Retry-After` headers on 429.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from runner.errors import (
    ErrorKind,
    JobFailedError,
    NotSubmittedError,
    ProviderCallError,
    ProviderResponseError,
    RunnerError,
)
from runner.plan import JobSpec, Limits, PollPolicy, Rate
from runner.providers import replies
from runner.providers.base import ApiError, ProviderHttp, ProviderInfo, Reply, Request, Submitted
from runner.remote import FetchReport, RemoteRef, RemoteState, ResultSink, Status


def _submit_requests(job: JobSpec) -> int:
    """As LobstrAdapter._prepare: the run, plus each squid step only when the job needs it."""
    creates = "crawler" in job.params
    configures = any(key in job.params for key in SQUID_KEYS)
    has_tasks = bool(job.params.get("tasks"))
    return 1 + int(creates) + int(configures) + int(has_tasks)


def _poll_requests(polls: int) -> int:
    """A poll of a running run also reads /stats (LobstrAdapter.poll); the last poll, which
    sees the run finished, does not."""
    return 2 * polls - 1 if polls > 0 else 0


def _result_requests(job: JobSpec) -> int:
    return int(job.fetch.get("results", True)) + 2 * int(job.fetch.get("export", False))


INFO = ProviderInfo(
    name="lobstr",
    title="Lobstr.io",
    default_base_url="https://api.lobstr.io/v1",
    api_key_env="LOBSTR_API_KEY",
    job_types=("run",),
    default_limits=Limits(
        endpoints={
            "submit": Rate(90, 60.0),
            "status": Rate(100, 60.0),
            "results": Rate(2, 1.0),
            "download": Rate(20, 60.0),
        },
        # Slots and concurrency are a per-plan quota with no published number
        # (docs/providers/lobstr.md#limits): learned from SlotsLimitExceeded /
        # ConcurrencyLimitExceeded, starting at 5.
        in_flight=5,
        origin={
            "submit": "published",
            "status": "published",
            "results": "published",
            "download": "learned",  # the export host's limit is not published
            "in_flight": "learned",
        },
    ),
    default_poll=PollPolicy(10.0, 60.0, 1.5),
    cancellable=("run",),  # POST /runs/{id}/abort
    sandbox_api="runner.sandbox.lobstr:LobstrApi",
    typical_duration=300.0,
    submit_requests=_submit_requests,
    poll_requests=_poll_requests,
    result_requests=_result_requests,
    estimate_note=(
        "lobstr: a submit is 1 request (run) + 1 for each step the job needs: a new squid, "
        "its configuration, its tasks; a poll of a running run costs 2 (+ /stats); results "
        "are the first results page, +2 for an export"
    ),
    cost_field="credit_used",  # the run's credit_used (docs/providers/lobstr.md#endpoints)
)

PAGE_SIZE = 100  # the documented maximum rows per /results page
RUNS_PAGE = 100  # runs per /runs listing page (documented maximum)
RECONCILE_PAGES = 5
EXPORT_NAME = "export.csv"  # deterministic: no remote id in the name
# Keys of a job's params that configure the squid (POST /squids/{id}, full replace).
SQUID_KEYS = (
    "params",
    "concurrency",
    "export_unique_results",
    "no_line_breaks",
    "to_complete",
    "accounts",
)
# A `done` run finished everything only with these reasons; any other is a partial result.
COMPLETE_REASONS = frozenset({"tasks_done", "export_fix"})  # export_fix: re-exported fine
ACTIVE = frozenset({"pending", "running", "uploading", "paused"})
CREDIT_CODES = frozenset({"NotEnoughBalance", "NoActiveSubscription", "UsageLimitExceeded"})
BUSY_CODES = frozenset({"SlotsLimitExceeded", "ConcurrencyLimitExceeded", "RunInProgress"})
RUN_IN_PROGRESS = "RunInProgress"


# -- requests ---------------------------------------------------------------------------------


def _id(value: str) -> str:
    """A path id, percent-encoded (ids are 32-hex hashes; anything else cannot escape)."""
    if value in {"", ".", ".."}:
        raise ProviderResponseError(f"lobstr: refusing the id {value!r}")
    return quote(value, safe="")


def squid_body(job: JobSpec) -> dict[str, Any] | None:
    """The configure body (only the keys the job sets), or None when it sets none."""
    body = {key: job.params[key] for key in SQUID_KEYS if key in job.params}
    return body or None


def build_create_squid(job: JobSpec) -> Request:
    body = {"crawler": job.params["crawler"]}
    if job.params.get("name"):
        body["name"] = job.params["name"]
    return Request("POST", "/squids", "submit", json=body)


def build_configure_squid(squid: str, body: Mapping[str, Any]) -> Request:
    return Request("POST", f"/squids/{_id(squid)}", "submit", json=dict(body))


def build_add_tasks(squid: str, tasks: Sequence[Mapping[str, Any]]) -> Request:
    return Request("POST", "/tasks", "submit", json={"squid": squid, "tasks": list(tasks)})


def build_start_run(squid: str) -> Request:
    return Request("POST", "/runs", "submit", json={"squid": squid})


def build_get_run(run_id: str) -> Request:
    return Request("GET", f"/runs/{_id(run_id)}", "status")


def build_stats(run_id: str) -> Request:
    return Request("GET", f"/runs/{_id(run_id)}/stats", "status")


def build_list_runs(squid: str, page: int) -> Request:
    params = {"squid": squid, "page": str(page), "limit": str(RUNS_PAGE)}
    return Request("GET", "/runs", "status", params=params)


def build_results_page(run_id: str, page: int) -> Request:
    # The SDK sends `page_size`, the docs `limit` (default 10 or 50): send both, at the
    # documented maximum of 100 (docs/providers/lobstr.md#pagination).
    params = {
        "run": run_id,
        "page": str(page),
        "page_size": str(PAGE_SIZE),
        "limit": str(PAGE_SIZE),
    }
    return Request("GET", "/results", "results", params=params)


def build_export(run_id: str) -> Request:
    # A /runs call (120/min), not the file itself: the signed URL is the download.
    return Request("GET", f"/runs/{_id(run_id)}/download", "status")


def build_abort(run_id: str) -> Request:
    return Request("POST", f"/runs/{_id(run_id)}/abort", "submit")  # no body (SDK)


# -- replies ----------------------------------------------------------------------------------


def parse_id(body: Any, what: str) -> str:
    obj = replies.require_object(body, f"lobstr: the {what}")
    value = obj.get("id")
    if not isinstance(value, str) or not value:
        raise ProviderResponseError(f"lobstr: the {what} has no id", replies.excerpt(body))
    return value


def parse_duplicated(body: Any) -> int:
    obj = replies.require_object(body, "lobstr: the tasks reply")
    return replies.count(obj.get("duplicated_count"))


def parse_percent(value: Any) -> float | None:
    """`percent_done` "42%" (or 42) → 0.42, clamped to 0..1."""
    if isinstance(value, str):
        try:
            value = float(value.strip().rstrip("%"))
        except ValueError:
            return None
    number = replies.number(value)
    return None if number is None else min(max(number / 100.0, 0.0), 1.0)


def parse_status(body: Any, stats: Any = None) -> Status:
    """A Run (poll, start or abort reply), optionally with its /stats, as a Status."""
    run = replies.require_object(body, "lobstr: the run")
    raw = run.get("status")
    if not isinstance(raw, str):
        raise ProviderResponseError("lobstr: the run has no status", replies.excerpt(body))
    status = raw.strip().lower()
    reason = run.get("done_reason") if isinstance(run.get("done_reason"), str) else None
    desc = run.get("done_reason_desc") if isinstance(run.get("done_reason_desc"), str) else None
    progress = parse_percent(stats.get("percent_done")) if isinstance(stats, Mapping) else None
    exporting = Status(
        RemoteState.RUNNING,
        raw,
        reason=reason,
        progress=progress,
        results_ready=False,
        phase="exporting",
        payload=run,
    )
    if status == "pending":
        return Status(RemoteState.QUEUED, raw, reason=reason, payload=run)
    if status == "running":
        return Status(RemoteState.RUNNING, raw, reason=reason, progress=progress, payload=run)
    if status == "uploading":
        return exporting
    if status == "paused":  # the engine applies the provider's max_paused
        return Status(RemoteState.PAUSED, raw, reason=reason, progress=progress, payload=run)
    if status == "done":
        if run.get("export_done") is not True:  # collected, export not ready yet
            return exporting
        partial = reason is not None and reason not in COMPLETE_REASONS
        return Status(
            RemoteState.SUCCEEDED, raw, reason=reason, progress=1.0, partial=partial, payload=run
        )
    if status == "aborted":
        return Status(RemoteState.CANCELLED, raw, reason=reason, payload=run)
    if status == "error":
        text = ": ".join(p for p in (reason, desc) if p) or None
        return Status(RemoteState.FAILED, raw, reason=text, payload=run)
    return Status(RemoteState.UNKNOWN, raw, reason=reason, payload=run)


def parse_listing(body: Any, what: str) -> tuple[list[Mapping[str, Any]], int | None]:
    """(rows, total_pages) of a paged reply `{data: [...], total_pages}` or a bare list."""
    rows: Any
    total_pages: int | None = 1
    if isinstance(body, list):
        rows = body
    else:
        envelope = replies.require_object(body, f"lobstr: the {what} page")
        rows = envelope.get("data")
        pages = envelope.get("total_pages")
        total_pages = pages if isinstance(pages, int) and not isinstance(pages, bool) else None
    if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
        raise ProviderResponseError(
            f"lobstr: the {what} page has no data list", replies.excerpt(body)
        )
    return rows, total_pages


def is_last_page(rows: Sequence[Any], page: int, total_pages: int | None, size: int) -> bool:
    if not rows:
        return True
    if total_pages is None:
        return len(rows) < size
    return page >= total_pages


def run_started(run: Mapping[str, Any]) -> float | None:
    return replies.parse_time(run.get("created_at")) or replies.parse_time(run.get("started_at"))


def pick_reconciled(
    runs: Sequence[Mapping[str, Any]], since: float | None, known: set[str]
) -> Mapping[str, Any] | None:
    """The earliest run started at/after `since` that no other job of ours owns. With
    `since=None` (a squid this job created: nobody else knows it) any such run is ours."""
    found = []
    for run in runs:
        started = run_started(run)
        run_id = run.get("id")
        if not isinstance(run_id, str) or run_id in known:
            continue
        if since is None or (started is not None and started >= since - replies.CLOCK_SKEW):
            found.append((started or 0.0, run))
    return min(found, key=lambda pair: pair[0])[1] if found else None


def untimed(run: Mapping[str, Any], known: set[str]) -> bool:
    """A run no other job of ours owns that lists no time: it cannot be ruled out."""
    return run.get("id") not in known and run_started(run) is None


def active_runs(runs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in runs if replies.lower(r.get("status")) in ACTIVE]


def parse_export_url(body: Any) -> str:
    obj = replies.require_object(body, "lobstr: the export reply")
    url = obj.get("s3")
    if not isinstance(url, str) or not url:
        raise ProviderResponseError("lobstr: the export reply has no s3 URL", replies.excerpt(body))
    return url


def classify_error(reply: Reply) -> ApiError:
    """docs/providers/lobstr.md#errors, docs/engineering.md#error-classes: business errors are 400s
    told apart by their type."""
    message, code = replies.error_text(reply)
    status = reply.status_code
    if status == 401:
        kind = ErrorKind.AUTH
    elif status == 429:
        kind = ErrorKind.RATE_LIMITED
    elif code in CREDIT_CODES:
        kind = ErrorKind.CREDITS
    elif code in BUSY_CODES:
        kind = ErrorKind.BUSY
    elif status == 404:
        kind = ErrorKind.NOT_FOUND
    elif status == 410:
        kind = ErrorKind.GONE
    elif status >= 500:
        kind = ErrorKind.TRANSIENT
    elif status in {400, 403, 422}:
        kind = ErrorKind.INVALID
        if code == "SquidNotReady" or "not ready" in message.lower():
            # The SDK rewrites this one into a hint too (lobstrio-sdk RunsResource.start).
            message += " (hint: set the crawler's required params under params.params)"
    else:
        kind = ErrorKind.OTHER
    return ApiError(kind, message, code=code, retry_after=replies.body_retry_after(reply))


def _now() -> float:
    return time.time()


# -- the adapter --------------------------------------------------------------------------------


# Durable notes (ProviderHttp.note), one per finished submit step, so a deferred or resumed
# submit never repeats one: a squid this job created, its configuration, its tasks (with
# the duplicates Lobstr reported), the moment POST /runs went out, and the run it started.
NOTE_SQUID = "squid"  # id of the squid this job created (a given squid is in the params)
NOTE_CONFIGURED = "configured"
NOTE_TASKS = "tasks_duplicated"  # tasks added; Lobstr's duplicated_count
NOTE_STARTING = "run_requested"  # unix time POST /runs was sent; None once refused
NOTE_RUN = "run"


@dataclass(slots=True)
class _Memory:
    """Per batch, across jobs: the runs this batch started or polled (a squid shared by
    two jobs is busy with our own run, not someone else's)."""

    ours: set[str] = field(default_factory=set)


def job_squid(job: JobSpec, notes: Mapping[str, Any]) -> tuple[str | None, bool]:
    """(squid, created by this job) as far as the submit got."""
    created = notes.get(NOTE_SQUID)
    if isinstance(created, str) and created:
        return created, True
    given = job.params.get("squid")
    return (given, False) if isinstance(given, str) and given else (None, False)


def _ref(squid: str, run_id: str, notes: Mapping[str, Any]) -> RemoteRef:
    return RemoteRef(run_id, {"squid": squid, "duplicated_count": notes.get(NOTE_TASKS) or 0})


class LobstrAdapter:
    """Composes the builders and parsers above with the engine's gated client."""

    info = INFO

    def __init__(self) -> None:
        self._memory: replies.PerClient[_Memory] = replies.PerClient(_Memory)

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"Authorization": f"Token {api_key}"}

    def classify_error(self, reply: Reply) -> ApiError:
        return classify_error(reply)

    async def submit(self, http: ProviderHttp, job: JobSpec) -> Submitted:
        memory = self._memory.of(http)
        noted_run = http.notes.get(NOTE_RUN)
        squid, _ = job_squid(job, http.notes)
        if isinstance(noted_run, str) and squid is not None:  # started before a crash
            memory.ours.add(noted_run)
            return Submitted(_ref(squid, noted_run, http.notes))
        try:
            squid = await self._prepare(http, job)
        except ProviderCallError as exc:
            # Squid and task calls start nothing: whatever became of them, no run exists,
            # so even a lost reply here leaves the job safe to submit again later.
            raise exc.as_not_accepted() from exc.__cause__  # the same failure, same cause
        started = replies.number(http.notes.get(NOTE_STARTING))
        if started is not None:
            # An earlier POST /runs may have started the run (lost reply, crash): look first.
            found, _ = await self._find_run(http, job, started)
            if found is not None:
                return Submitted(found)
        http.note(NOTE_STARTING, _now())
        try:
            reply = await http.send(build_start_run(squid))
        except RunnerError as exc:
            if isinstance(exc, ProviderCallError) and exc.not_accepted:
                http.note(NOTE_STARTING, None)  # refused: provably nothing started
            await self._explain_conflict(http, exc, squid, memory)
            raise
        body = replies.reply_json(reply, "lobstr")
        run_id = parse_id(body, "run")
        memory.ours.add(run_id)
        http.note(NOTE_RUN, run_id)
        return Submitted(_ref(squid, run_id, http.notes), parse_status(body))

    async def _prepare(self, http: ProviderHttp, job: JobSpec) -> str:
        """Create, configure and fill the squid, skipping every step already noted."""
        squid, _ = job_squid(job, http.notes)
        if squid is None:
            body = replies.reply_json(await http.send(build_create_squid(job)), "lobstr")
            squid = parse_id(body, "squid")
            http.note(NOTE_SQUID, squid)
        configure = squid_body(job)
        if configure is not None and not http.notes.get(NOTE_CONFIGURED):
            await http.send(build_configure_squid(squid, configure))
            http.note(NOTE_CONFIGURED, True)
        tasks = job.params.get("tasks")
        if tasks and http.notes.get(NOTE_TASKS) is None:
            reply = await http.send(build_add_tasks(squid, tasks))
            http.note(NOTE_TASKS, parse_duplicated(replies.reply_json(reply, "lobstr")))
        return squid

    async def _explain_conflict(
        self, http: ProviderHttp, exc: BaseException, squid: str, memory: _Memory
    ) -> None:
        """One active run per squid (400 RunInProgress): a deferral while the active run is
        one of ours, a clear failure when someone else's run holds the squid."""
        error = replies.api_error_of(exc)
        if error is None or error.code != RUN_IN_PROGRESS:
            return
        body = replies.reply_json(await http.send(build_list_runs(squid, 1)), "lobstr")
        active = active_runs(parse_listing(body, "runs")[0])
        foreign = [r for r in active if r.get("id") not in memory.ours]
        if active and foreign == active:
            run = foreign[0]
            raise JobFailedError(
                f"lobstr: squid {squid} already has an active run {run.get('id')} "
                f"(status {run.get('status')}, origin {run.get('origin') or 'unknown'}) that "
                "this batch did not start; only one run per squid can be active: wait for it "
                "to finish or abort it, then run this job again"
            ) from exc
        # Otherwise the active run is ours (or just ended): the error stays as the client
        # raised it (BUSY, not accepted), and the engine submits this job again later.

    async def poll(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> Status:
        self._memory.of(http).ours.add(ref.id)
        body = replies.reply_json(await http.send(build_get_run(ref.id)), "lobstr")
        # /stats costs a second request per poll: ask only while the run is collecting,
        # the one phase whose progress moves (pending/uploading/paused/done have none).
        if (
            replies.lower(replies.require_object(body, "lobstr: the run").get("status"))
            != "running"
        ):
            return parse_status(body)
        stats = replies.reply_json(await http.send(build_stats(ref.id)), "lobstr")
        return parse_status(body, stats)

    async def fetch(
        self,
        http: ProviderHttp,
        job: JobSpec,
        ref: RemoteRef,
        status: Status,
        sink: ResultSink,
    ) -> FetchReport:
        items = files = 0
        notes: list[str] = []
        partial = status.partial
        if job.fetch.get("results", True):
            page = 1
            while True:  # one page in memory at a time; the gate paces /results at 2/s
                reply = await http.send(build_results_page(ref.id, page))
                body = replies.reply_json(reply, "lobstr")
                rows, total_pages = parse_listing(body, "results")
                for row in rows:
                    sink.append_item(row)
                items += len(rows)
                warning = body.get("warning") if isinstance(body, Mapping) else None
                if isinstance(warning, str) and warning:  # free-plan cap (docs/pagination)
                    notes.append(warning)
                    partial = True
                    break
                if is_last_page(rows, page, total_pages, PAGE_SIZE):
                    break
                page += 1
        if job.fetch.get("export", False):
            body = replies.reply_json(await http.send(build_export(ref.id)), "lobstr")
            # A signed storage URL: no API key travels with it.
            await http.download(parse_export_url(body), sink.file_path(EXPORT_NAME), send_key=False)
            files += 1
        run = status.payload
        reason = run.get("done_reason")
        if partial and reason not in COMPLETE_REASONS and reason is not None:
            notes.insert(0, f"the run ended with done_reason {reason}")
        outcome = {
            "done_reason": reason,
            "done_reason_desc": run.get("done_reason_desc"),
            "duplicated_count": ref.extra.get("duplicated_count"),
            "credit_used": run.get("credit_used"),
        }
        return FetchReport(
            items=items, files=files, partial=partial, notes=tuple(notes), outcome=outcome
        )

    async def cancel(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> None:
        # Abort stops collecting and still exports what was gathered (docs/abort-run); a
        # run already finished answers 404, which raises: never reported cancelled.
        INFO.refuse_cancel(job)
        await http.send(build_abort(ref.id))

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        """The run of an unanswered submit, from the squid's run list. NotSubmittedError
        when the notes and the listing prove no run exists (safe to submit again): no
        squid, POST /runs never sent (or refused), this job's own squid has no run, or the
        whole run list of a given squid shows none started since the request (less the
        clock skew). Cut by the page bound, or a run without a time: None (cannot tell)."""
        squid, created = job_squid(job, http.notes)
        starting = http.notes.get(NOTE_STARTING)
        if not isinstance(http.notes.get(NOTE_RUN), str) and (squid is None or starting is None):
            where = f"squid {squid}" if squid is not None else "no squid yet"
            raise NotSubmittedError(f"lobstr: POST /runs was never sent ({where}): no run exists")
        noted = replies.number(starting)
        ref, complete = await self._find_run(http, job, noted if noted is not None else since)
        if ref is None and complete and created:
            raise NotSubmittedError(f"lobstr: this job's squid {squid} has no run: none started")
        if ref is None and complete:  # every run of the squid listed, each with its time
            raise NotSubmittedError(
                f"lobstr: squid {squid} has no run started since the request: none started"
            )
        return ref

    async def _find_run(
        self, http: ProviderHttp, job: JobSpec, since: float
    ) -> tuple[RemoteRef | None, bool]:
        """(the run an unanswered POST /runs started, whether the whole list was read),
        from the squid's run list: on a squid this job created every run is ours (no clock
        needed); on a given one, the earliest run no other job of ours owns, created at or
        after `since` less the clock skew."""
        memory = self._memory.of(http)
        squid, created = job_squid(job, http.notes)
        if squid is None:
            return None, True  # no squid was created, so no run can exist
        noted_run = http.notes.get(NOTE_RUN)
        if isinstance(noted_run, str):
            return _ref(squid, noted_run, http.notes), True
        for page in range(1, RECONCILE_PAGES + 1):
            body = replies.reply_json(await http.send(build_list_runs(squid, page)), "lobstr")
            runs, total_pages = parse_listing(body, "runs")
            run = pick_reconciled(runs, None if created else since, memory.ours)
            if run is not None:
                run_id = parse_id(run, "run")
                memory.ours.add(run_id)
                http.note(NOTE_RUN, run_id)
                return _ref(squid, run_id, http.notes), True
            if not created and any(untimed(r, memory.ours) for r in runs):
                return None, False  # a run without a time could be this job's: cannot tell
            if is_last_page(runs, page, total_pages, RUNS_PAGE):
                return None, True
        return None, False


ADAPTER = LobstrAdapter()
