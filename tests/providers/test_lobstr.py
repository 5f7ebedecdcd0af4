from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.errors import ErrorKind, JobFailedError, NotSubmittedError, ProviderCallError
from runner.plan import JobSpec
from runner.providers import lobstr
from runner.providers.base import Reply
from runner.remote import RemoteRef, RemoteState
from runner.store.results import JobDir
from tests.providers.fakes import API_KEY, FakeHttp, router

SQUID = "e445405ef4ab41208ef7d29b92a1a9dd"
RUN = "0393be3ea6f74986906153df1c3f9894"
OTHER = "1111be3ea6f74986906153df1c3f9894"
SINCE = 1795348800.0  # 2026-11-22T12:00:00Z


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def job(**params: Any) -> JobSpec:
    fetch = params.pop("fetch", {})
    return JobSpec(id="j1", provider="lobstr", type="run", params=params, fetch=fetch)


def run(status: str = "done", **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": RUN,
        "object": "run",
        "squid": SQUID,
        "status": status,
        "done_reason": "tasks_done" if status == "done" else None,
        "done_reason_desc": None,
        "export_done": status.lower() == "done",
        "total_results": 2,
        "credit_used": 2.0,
        "created_at": "2026-11-22T12:00:02.5",
    }
    body.update(kw)
    return body


def reply(status: int, body: Any) -> Reply:
    return Reply(status, {}, json.dumps(body).encode())


# -- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "kw", "state", "phase", "ready"),
    [
        (run("pending"), {}, RemoteState.QUEUED, None, True),
        (run("RUNNING"), {}, RemoteState.RUNNING, None, True),
        (run("uploading"), {}, RemoteState.RUNNING, "exporting", False),
        (run("done", export_done=False), {}, RemoteState.RUNNING, "exporting", False),
        (run("Done", export_done=True), {}, RemoteState.SUCCEEDED, None, True),
        (run("paused", done_reason="no_account_available"), {}, RemoteState.PAUSED, None, True),
        (run("aborted", done_reason="aborted"), {}, RemoteState.CANCELLED, None, True),
        (run("error"), {}, RemoteState.FAILED, None, True),
        (run("queued_for_the_moon"), {}, RemoteState.UNKNOWN, None, True),
    ],
)
def test_status_mapping(
    body: dict[str, Any], kw: dict[str, Any], state: RemoteState, phase: str | None, ready: bool
) -> None:
    status = lobstr.parse_status(body, **kw)
    assert (status.state, status.phase, status.results_ready) == (state, phase, ready)
    assert status.raw == body["status"]


def test_paused_and_error_keep_their_reasons() -> None:
    paused = lobstr.parse_status(run("paused", done_reason="request_failed"))
    assert paused.reason == "request_failed"
    failed = lobstr.parse_status(
        run("error", done_reason="cookies_expired", done_reason_desc="renew the cookies")
    )
    assert failed.reason == "cookies_expired: renew the cookies"


def test_done_is_partial_unless_every_task_was_done() -> None:
    assert lobstr.parse_status(run()).partial is False
    assert lobstr.parse_status(run(done_reason="export_fix")).partial is False
    assert lobstr.parse_status(run(done_reason="no_credits_left")).partial is True


@pytest.mark.parametrize(
    ("value", "fraction"), [("42%", 0.42), ("100%", 1.0), (7, 0.07), ("∞", None), (None, None)]
)
def test_percent_done(value: Any, fraction: float | None) -> None:
    assert lobstr.parse_percent(value) == fraction


def test_results_pages_ask_for_100_rows_both_ways_on_the_results_class() -> None:
    request = lobstr.build_results_page(RUN, 2)
    assert (request.path, request.endpoint) == ("/results", "results")
    assert request.params == {"run": RUN, "page": "2", "page_size": "100", "limit": "100"}


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (400, {"error": {"message": "Not enough credits", "type": "NotEnoughBalance"}},
         ErrorKind.CREDITS, "NotEnoughBalance"),
        (400, {"errors": {"message": "No subscription", "type": "NoActiveSubscription",
                          "code": 400}}, ErrorKind.CREDITS, "NoActiveSubscription"),
        (400, {"error": "UsageLimitExceeded"}, ErrorKind.CREDITS, "UsageLimitExceeded"),
        (400, {"error": {"message": "A run is already active for this squid",
                         "type": "RunInProgress"}}, ErrorKind.BUSY, "RunInProgress"),
        (400, {"detail": "Invalid task"}, ErrorKind.INVALID, None),
        (401, {"detail": "Invalid token."}, ErrorKind.AUTH, None),
        (404, {"error": {"message": "Run not found", "type": "RunDoesNotExist"}},
         ErrorKind.NOT_FOUND, "RunDoesNotExist"),
        (429, {"error": "Rate limit exceeded...", "type": "RateLimitExceeded", "code": 429},
         ErrorKind.RATE_LIMITED, "RateLimitExceeded"),
        (500, {"error": {"message": "Oops", "type": "SomethingWentWrong"}},
         ErrorKind.TRANSIENT, "SomethingWentWrong"),
    ],
)  # fmt: skip
def test_classify_error_reads_every_documented_body_shape(
    status: int, body: Any, kind: ErrorKind, code: str | None
) -> None:
    error = lobstr.classify_error(reply(status, body))
    assert (error.kind, error.code) == (kind, code)


def test_classify_error_messages_and_waits() -> None:
    throttled = lobstr.classify_error(
        reply(429, {"detail": "Request was throttled. Expected available in 7 seconds."})
    )
    assert throttled.message == "Request was throttled. Expected available in 7 seconds."
    assert throttled.retry_after == 7.0
    not_ready = lobstr.classify_error(
        reply(400, {"error": {"message": "Squid is not ready", "type": "SquidNotReady"}})
    )
    assert not_ready.message == (
        "Squid is not ready (hint: set the crawler's required params under params.params)"
    )


def test_reconcile_picks_the_earliest_unowned_run_since_the_submit() -> None:
    runs = [
        {"id": "before", "created_at": "2026-11-22T11:58:00"},
        {"id": "sibling", "created_at": "2026-11-22T12:00:01"},
        {"id": "later", "created_at": "2026-11-22T12:00:09"},
        {"id": "ours", "created_at": "2026-11-22T12:00:03"},
    ]
    assert lobstr.pick_reconciled(runs, SINCE, {"sibling"}) == runs[3]
    assert lobstr.pick_reconciled(runs[:1], SINCE, set()) is None


# -- submit ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_creates_configures_adds_tasks_then_starts_the_run() -> None:
    routes = {
        "POST /v1/squids": {"id": SQUID, "name": "prices"},
        f"POST /v1/squids/{SQUID}": {"id": SQUID},
        "POST /v1/tasks": {"tasks": [{"id": "t1"}], "duplicated_count": 1},
        "POST /v1/runs": run("pending"),
    }
    http = FakeHttp(lobstr.ADAPTER, router(routes), base_url="https://api.test/v1")
    spec = job(
        crawler="4734d096159ef05210e0e1677e8be823",
        name="prices",
        params={"max_results": 10},
        concurrency=2,
        tasks=[{"url": "https://a.example"}, {"url": "https://a.example"}],
    )
    submitted = await lobstr.LobstrAdapter().submit(http, spec)

    assert http.paths() == list(routes)
    bodies = [s.json() for s in http.seen]
    assert bodies == [
        {"crawler": "4734d096159ef05210e0e1677e8be823", "name": "prices"},
        {"params": {"max_results": 10}, "concurrency": 2},
        {"squid": SQUID, "tasks": [{"url": "https://a.example"}, {"url": "https://a.example"}]},
        {"squid": SQUID},
    ]
    assert {s.endpoint for s in http.seen} == {"submit"}
    assert all(s.headers["authorization"] == f"Token {API_KEY}" for s in http.seen)
    assert submitted.ref == RemoteRef(RUN, {"squid": SQUID, "duplicated_count": 1})
    assert submitted.status is not None
    assert submitted.status.state is RemoteState.QUEUED


@pytest.mark.anyio
async def test_submit_to_an_existing_squid_only_starts_the_run() -> None:
    http = FakeHttp(lobstr.ADAPTER, router({"POST /runs": run("pending")}))
    submitted = await lobstr.LobstrAdapter().submit(http, job(squid=SQUID))
    assert http.paths() == ["POST /runs"]
    assert submitted.ref.extra == {"squid": SQUID, "duplicated_count": 0}


@pytest.mark.anyio
async def test_a_failed_preparation_is_not_accepted_and_never_recreates_the_squid() -> None:
    routes = {
        "POST /squids": {"id": SQUID},
        "POST /tasks": [
            httpx.Response(502, json={"error": "bad gateway"}),
            httpx.Response(200, json={"tasks": [], "duplicated_count": 0}),
        ],
        "POST /runs": run("pending"),
    }
    http = FakeHttp(lobstr.ADAPTER, router(routes))
    adapter = lobstr.LobstrAdapter()
    spec = job(crawler="c" * 32, tasks=[{"url": "https://a.example"}])
    with pytest.raises(ProviderCallError) as caught:
        await adapter.submit(http, spec)
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert caught.value.not_accepted is True  # no run can exist: safe to submit again
    submitted = await adapter.submit(http, spec)
    assert submitted.ref.id == RUN
    assert http.paths() == ["POST /squids", "POST /tasks", "POST /tasks", "POST /runs"]


def run_in_progress() -> httpx.Response:
    error = {"message": "A run is already active for this squid", "type": "RunInProgress"}
    return httpx.Response(400, json={"error": error})


@pytest.mark.anyio
async def test_run_in_progress_of_someone_else_fails_with_a_clear_message() -> None:
    foreign = run("running", id=OTHER, origin="schedule")
    routes = {"POST /runs": run_in_progress(), "GET /runs": {"data": [foreign], "total_pages": 1}}
    http = FakeHttp(lobstr.ADAPTER, router(routes))
    with pytest.raises(JobFailedError) as caught:
        await lobstr.LobstrAdapter().submit(http, job(squid=SQUID))
    assert str(caught.value) == (
        f"lobstr: squid {SQUID} already has an active run {OTHER} (status running, origin "
        "schedule) that this batch did not start; only one run per squid can be active: wait "
        "for it to finish or abort it, then run this job again"
    )
    assert http.seen[-1].query == {"squid": SQUID, "page": "1", "limit": "100"}


@pytest.mark.anyio
async def test_run_in_progress_of_our_own_earlier_run_is_a_deferral() -> None:
    routes = {
        f"GET /runs/{OTHER}": run("running", id=OTHER),
        f"GET /runs/{OTHER}/stats": {"percent_done": "10%"},
        "POST /runs": run_in_progress(),
        "GET /runs": {"data": [run("running", id=OTHER)], "total_pages": 1},
    }
    http = FakeHttp(lobstr.ADAPTER, router(routes))
    adapter = lobstr.LobstrAdapter()
    await adapter.poll(http, job(squid=SQUID), RemoteRef(OTHER, {"squid": SQUID}))
    with pytest.raises(ProviderCallError) as caught:
        await adapter.submit(http, job(squid=SQUID))
    assert (caught.value.kind, caught.value.not_accepted) == (ErrorKind.BUSY, True)


# -- poll, fetch, cancel, reconcile ---------------------------------------------------------------


@pytest.mark.anyio
async def test_poll_asks_for_stats_only_while_running() -> None:
    routes = {
        f"GET /runs/{RUN}": [
            httpx.Response(200, json=run("pending")),
            httpx.Response(200, json=run("running")),
            httpx.Response(200, json=run("uploading")),
        ],
        f"GET /runs/{RUN}/stats": {"percent_done": "42%", "is_done": False},
    }
    http = FakeHttp(lobstr.ADAPTER, router(routes))
    adapter = lobstr.LobstrAdapter()
    ref = RemoteRef(RUN, {"squid": SQUID})
    states = [await adapter.poll(http, job(squid=SQUID), ref) for _ in range(3)]
    assert [(s.state, s.progress) for s in states] == [
        (RemoteState.QUEUED, None),
        (RemoteState.RUNNING, 0.42),
        (RemoteState.RUNNING, None),
    ]
    assert http.paths() == [
        f"GET /runs/{RUN}",
        f"GET /runs/{RUN}",
        f"GET /runs/{RUN}/stats",
        f"GET /runs/{RUN}",
    ]


def result_pages(rows: list[dict[str, Any]]) -> Any:
    def answer(request: httpx.Request) -> httpx.Response:
        page, size = int(request.url.params["page"]), int(request.url.params["page_size"])
        total_pages = max(1, -(-len(rows) // size))
        data = rows[(page - 1) * size : page * size]
        return httpx.Response(200, json={"data": data, "page": page, "total_pages": total_pages})

    return answer


@pytest.mark.anyio
async def test_fetch_pages_results_and_downloads_the_export_without_the_key(
    tmp_path: Path,
) -> None:
    rows = [{"name": f"row {n}"} for n in range(230)]
    routes = {
        "GET /results": result_pages(rows),
        f"GET /runs/{RUN}/download": {"s3": "https://s3.example/exports/run.csv?X-Amz=1"},
        "GET /exports/run.csv": httpx.Response(200, content=b"name\nrow 0\n"),
    }
    http = FakeHttp(lobstr.ADAPTER, router(routes))
    out = JobDir(tmp_path / "j1", "j1")
    status = lobstr.parse_status(run())
    ref = RemoteRef(RUN, {"squid": SQUID, "duplicated_count": 3})
    report = await lobstr.LobstrAdapter().fetch(
        http, job(squid=SQUID, fetch={"export": True}), ref, status, out
    )
    out.commit()
    written = (out.path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in written] == rows
    assert [s.query["page"] for s in http.seen if s.path == "/results"] == ["1", "2", "3"]
    assert (out.files_dir / "export.csv").read_bytes() == b"name\nrow 0\n"
    s3 = [s for s in http.seen if s.url.host == "s3.example"]
    assert "authorization" not in s3[0].headers
    assert (report.items, report.files, report.partial) == (230, 1, False)
    assert report.outcome == {
        "done_reason": "tasks_done",
        "done_reason_desc": None,
        "duplicated_count": 3,
        "credit_used": 2.0,
    }


@pytest.mark.anyio
async def test_fetch_notes_the_free_plan_cap_as_partial(tmp_path: Path) -> None:
    warning = "Export limit reached - only 50 results returned"
    page = {"data": [{"n": 1}], "page": 1, "total_pages": 4, "warning": warning}
    http = FakeHttp(lobstr.ADAPTER, router({"GET /results": page}))
    report = await lobstr.LobstrAdapter().fetch(
        http, job(squid=SQUID), RemoteRef(RUN), lobstr.parse_status(run()), JobDir(tmp_path, "j")
    )
    assert (report.items, report.partial, report.notes) == (1, True, (warning,))


@pytest.mark.anyio
async def test_fetch_can_skip_results_and_notes_an_incomplete_run(tmp_path: Path) -> None:
    http = FakeHttp(lobstr.ADAPTER, router({}))
    status = lobstr.parse_status(run(done_reason="too_many_requests"))
    report = await lobstr.LobstrAdapter().fetch(
        http, job(squid=SQUID, fetch={"results": False}), RemoteRef(RUN), status,
        JobDir(tmp_path, "j"),
    )  # fmt: skip
    assert http.seen == []
    assert (report.partial, report.notes) == (
        True,
        ("the run ended with done_reason too_many_requests",),
    )


@pytest.mark.anyio
async def test_cancel_aborts_the_run() -> None:
    http = FakeHttp(lobstr.ADAPTER, router({f"POST /runs/{RUN}/abort": run("uploading")}))
    await lobstr.LobstrAdapter().cancel(http, job(squid=SQUID), RemoteRef(RUN))
    assert http.paths() == [f"POST /runs/{RUN}/abort"]
    assert http.seen[0].body == b""


@pytest.mark.anyio
async def test_reconcile_lists_the_squids_runs() -> None:
    listing = {"data": [run("pending", created_at="2026-11-22T12:00:04")], "total_pages": 1}
    sent = {"run_requested": SINCE}
    http = FakeHttp(lobstr.ADAPTER, router({"GET /runs": listing}), job_notes=dict(sent))
    ref = await lobstr.LobstrAdapter().reconcile(http, job(squid=SQUID), SINCE)
    assert ref == RemoteRef(RUN, {"squid": SQUID, "duplicated_count": 0})
    # A shared squid whose whole run list shows no run since the request: none started.
    empty = FakeHttp(lobstr.ADAPTER, router({"GET /runs": []}), job_notes=dict(sent))
    with pytest.raises(NotSubmittedError, match="no run started since the request"):
        await lobstr.LobstrAdapter().reconcile(empty, job(squid=SQUID), SINCE)
    # A run that lists no time might be this job's: cannot tell.
    untimed = {"data": [{**run("pending"), "created_at": None, "started_at": None}]}
    blind = FakeHttp(lobstr.ADAPTER, router({"GET /runs": untimed}), job_notes=dict(sent))
    assert await lobstr.LobstrAdapter().reconcile(blind, job(squid=SQUID), SINCE) is None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("spec", "notes", "message"),
    [
        (job(crawler="c" * 32), {},
         "lobstr: POST /runs was never sent (no squid yet): no run exists"),
        (job(squid=SQUID), {},
         f"lobstr: POST /runs was never sent (squid {SQUID}): no run exists"),
        (job(squid=SQUID), {"run_requested": None},  # refused: provably nothing started
         f"lobstr: POST /runs was never sent (squid {SQUID}): no run exists"),
    ],
)  # fmt: skip
async def test_reconcile_proves_absence_from_the_notes_alone(
    spec: JobSpec, notes: dict[str, Any], message: str
) -> None:
    http = FakeHttp(lobstr.ADAPTER, router({}), job_notes=notes)
    with pytest.raises(NotSubmittedError) as caught:
        await lobstr.LobstrAdapter().reconcile(http, spec, SINCE)
    assert str(caught.value) == message
    assert http.seen == []


@pytest.mark.anyio
async def test_reconcile_proves_absence_when_the_jobs_own_squid_has_no_run() -> None:
    notes = {"squid": SQUID, "tasks_duplicated": 0, "run_requested": SINCE}
    http = FakeHttp(
        lobstr.ADAPTER, router({"GET /runs": {"data": [], "total_pages": 1}}), job_notes=notes
    )
    with pytest.raises(NotSubmittedError) as caught:
        await lobstr.LobstrAdapter().reconcile(http, full_job(), SINCE)
    assert str(caught.value) == f"lobstr: this job's squid {SQUID} has no run: none started"
    assert http.paths() == ["GET /runs"]


@pytest.mark.anyio
async def test_reconcile_on_a_squid_this_job_created_needs_no_clock() -> None:
    routes = {
        "POST /squids": {"id": SQUID},
        "POST /tasks": {"tasks": [], "duplicated_count": 0},
        "POST /runs": httpx.Response(504, text="gateway timeout"),
        # The provider's clock is far from ours (the sandbox's is a fixed virtual epoch).
        "GET /runs": {"data": [run("pending", created_at="2026-01-05T09:00:01")]},
    }
    http = FakeHttp(lobstr.ADAPTER, router(routes))
    adapter = lobstr.LobstrAdapter()
    spec = job(crawler="c" * 32, tasks=[{"url": "https://a.example"}])
    with pytest.raises(ProviderCallError):
        await adapter.submit(http, spec)
    ref = await adapter.reconcile(http, spec, SINCE)
    assert ref == RemoteRef(RUN, {"squid": SQUID, "duplicated_count": 0})
    assert (
        lobstr.pick_reconciled([run("pending", created_at="2026-01-05T09:00:01")], SINCE, set())
        is None
    )


# -- durable notes: a deferred or resumed submit never repeats a finished step ----------------


def full_job() -> JobSpec:
    return job(crawler="c" * 32, params={"max_results": 10}, tasks=[{"url": "https://a.example"}])


@pytest.mark.anyio
async def test_submit_notes_every_finished_step_before_the_next() -> None:
    def start(request: httpx.Request) -> httpx.Response:
        # Each earlier step is journaled by the time the run is asked for.
        assert set(http.job_notes) == {"squid", "configured", "tasks_duplicated", "run_requested"}
        return httpx.Response(200, json=run("pending"))

    routes = {
        "POST /squids": {"id": SQUID},
        f"POST /squids/{SQUID}": {"id": SQUID},
        "POST /tasks": {"tasks": [], "duplicated_count": 4},
        "POST /runs": start,
    }
    http = FakeHttp(lobstr.ADAPTER, router(routes))
    await lobstr.LobstrAdapter().submit(http, full_job())
    requested = http.job_notes.pop("run_requested")
    assert isinstance(requested, float)
    assert http.job_notes == {
        "squid": SQUID,
        "configured": True,
        "tasks_duplicated": 4,
        "run": RUN,
    }


@pytest.mark.anyio
async def test_a_resumed_submit_skips_the_steps_noted_before_the_crash() -> None:
    routes = {"POST /tasks": {"tasks": [], "duplicated_count": 2}, "POST /runs": run("pending")}
    # A new process: a fresh adapter (no memory) and only the journaled notes.
    http = FakeHttp(lobstr.ADAPTER, router(routes), job_notes={"squid": SQUID, "configured": True})
    submitted = await lobstr.LobstrAdapter().submit(http, full_job())
    assert http.paths() == ["POST /tasks", "POST /runs"]
    assert http.seen[0].json() == {"squid": SQUID, "tasks": [{"url": "https://a.example"}]}
    assert submitted.ref == RemoteRef(RUN, {"squid": SQUID, "duplicated_count": 2})


@pytest.mark.anyio
async def test_a_noted_run_is_taken_back_without_any_request() -> None:
    notes = {"squid": SQUID, "configured": True, "tasks_duplicated": 1, "run": RUN}
    http = FakeHttp(lobstr.ADAPTER, router({}), job_notes=notes)
    submitted = await lobstr.LobstrAdapter().submit(http, full_job())
    assert http.seen == []
    assert (submitted.ref, submitted.status) == (
        RemoteRef(RUN, {"squid": SQUID, "duplicated_count": 1}),
        None,
    )


@pytest.mark.anyio
async def test_an_unanswered_start_is_looked_up_before_it_is_ever_sent_again() -> None:
    notes = {"squid": SQUID, "configured": True, "tasks_duplicated": 0, "run_requested": SINCE}
    # The provider's clock is nowhere near ours: a squid this job created needs none.
    listing = {"data": [run("running", created_at="2026-01-05T09:00:01")], "total_pages": 1}
    http = FakeHttp(lobstr.ADAPTER, router({"GET /runs": listing}), job_notes=dict(notes))
    submitted = await lobstr.LobstrAdapter().submit(http, full_job())
    assert http.paths() == ["GET /runs"]
    assert http.seen[0].query == {"squid": SQUID, "page": "1", "limit": "100"}
    assert submitted.ref.id == RUN
    assert http.job_notes["run"] == RUN

    # No run on the squid: the earlier POST /runs started nothing, so it is sent again.
    routes = {"GET /runs": {"data": [], "total_pages": 1}, "POST /runs": run("pending")}
    again = FakeHttp(lobstr.ADAPTER, router(routes), job_notes=dict(notes))
    assert (await lobstr.LobstrAdapter().submit(again, full_job())).ref.id == RUN
    assert again.paths() == ["GET /runs", "POST /runs"]


@pytest.mark.anyio
async def test_a_refused_start_is_noted_as_nothing_started() -> None:
    routes = {
        "POST /runs": [run_in_progress(), httpx.Response(200, json=run("pending"))],
        "GET /runs": {"data": [], "total_pages": 1},
    }
    http = FakeHttp(lobstr.ADAPTER, router(routes))
    adapter = lobstr.LobstrAdapter()
    with pytest.raises(ProviderCallError):
        await adapter.submit(http, job(squid=SQUID))
    assert http.job_notes == {"run_requested": None}
    await adapter.submit(http, job(squid=SQUID))
    # The deferred submit goes straight to POST /runs: no lookup for a run it never started.
    assert http.paths() == ["POST /runs", "GET /runs", "POST /runs"]


@pytest.mark.anyio
async def test_reconcile_after_a_restart_uses_the_noted_squid_and_start_time() -> None:
    # A given (shared) squid: only runs created since the noted start (less the skew) count.
    listing = {
        "data": [
            run("done", id=OTHER, created_at="2026-11-22T11:50:00"),
            run("pending", created_at="2026-11-22T12:00:04"),
        ],
        "total_pages": 1,
    }
    http = FakeHttp(
        lobstr.ADAPTER, router({"GET /runs": listing}), job_notes={"run_requested": SINCE}
    )
    ref = await lobstr.LobstrAdapter().reconcile(http, job(squid=SQUID), 0.0)
    assert ref == RemoteRef(RUN, {"squid": SQUID, "duplicated_count": 0})
    assert http.job_notes["run"] == RUN
    notes = {"squid": SQUID, "run_requested": SINCE}
    created = FakeHttp(lobstr.ADAPTER, router({"GET /runs": listing}), job_notes=notes)
    # A squid this job created: every run on it is ours, the clock does not matter.
    found = await lobstr.LobstrAdapter().reconcile(created, full_job(), SINCE)
    assert found is not None
    assert found.id == OTHER
