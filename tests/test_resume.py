"""The engine continuing a batch (resume), stopping on a signal, cancelling, and pausing:
against the scripted adapter of test_engine (no HTTP, tiny durations)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

from runner.engine.engine import Engine, scrub
from runner.engine.recovery import SENT_NOTE
from runner.errors import NotSubmittedError
from runner.http.client import ProviderClient
from runner.http.limits import Gate
from runner.lifecycle import Event, JobRecord, State
from runner.plan import JobSpec, Limits, Plan
from runner.providers.base import ProviderHttp, Reply, Request
from runner.remote import RemoteRef, RemoteState, Status
from tests.test_engine import (
    FakeAdapter,
    FakeJobOutput,
    FakeOutput,
    done,
    make_engine,
    make_plan,
    status,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ResettableOutput(FakeOutput):
    def __init__(self) -> None:
        super().__init__()
        self.resets: list[str] = []

    def job_dir(self, job_id: str) -> FakeJobOutput:
        out = super().job_dir(job_id)
        out.reset = lambda: self.resets.append(job_id)  # type: ignore[attr-defined]
        return out


class Reconciling(FakeAdapter):
    def __init__(self, answer: RemoteRef | Exception | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.answer = answer
        self.reconciled: list[tuple[str, float]] = []

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        self.reconciled.append((job.id, since))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def records(plan: Plan, state: State, **fields: Any) -> list[JobRecord]:
    return [JobRecord(spec, state=state, **fields) for spec in plan.jobs]


def submitting(plan: Plan, *, sent_attempt: int | None) -> list[JobRecord]:
    notes = {} if sent_attempt is None else {SENT_NOTE: {"attempt": sent_attempt, "at": 1234.5}}
    return [JobRecord(s, state=State.SUBMITTING, attempts=1, notes=dict(notes)) for s in plan.jobs]


# -- a job left in `submitting` ----------------------------------------------------------------


async def test_a_submit_that_never_left_the_process_is_simply_sent() -> None:
    plan = make_plan(1)
    adapter = Reconciling(RemoteRef("never-asked"))
    engine, _, rec = make_engine(plan, adapter, records=submitting(plan, sent_attempt=None))
    assert (await engine.run()).counts == {State.SUCCEEDED: 1}
    assert adapter.reconciled == []
    assert adapter.submits == ["j0"]
    assert rec.events("j0")[:2] == [Event.DEFERRED, Event.SUBMIT]


async def test_a_mark_from_an_earlier_attempt_does_not_count_as_sent() -> None:
    plan = make_plan(1)
    adapter = Reconciling(None)
    engine, _, _ = make_engine(plan, adapter, records=submitting(plan, sent_attempt=0))
    assert (await engine.run()).counts == {State.SUCCEEDED: 1}
    assert adapter.reconciled == []
    assert adapter.submits == ["j0"]


async def test_a_sent_submit_found_by_reconcile_is_polled_not_sent_again() -> None:
    plan = make_plan(1)
    adapter = Reconciling(RemoteRef("found-1"))
    engine, _, rec = make_engine(plan, adapter, records=submitting(plan, sent_attempt=1))
    assert (await engine.run()).counts == {State.SUCCEEDED: 1}
    assert adapter.submits == []
    assert adapter.reconciled == [("j0", 1234.5)]  # since = when the request left
    assert rec.events("j0")[:2] == [Event.AMBIGUOUS, Event.RECONCILED]
    assert engine.records["j0"].remote == RemoteRef("found-1")
    assert engine.records["j0"].error is None


async def test_a_sent_submit_the_provider_cannot_find_is_submit_unknown() -> None:
    plan = make_plan(1)
    adapter = Reconciling(None)
    engine, output, rec = make_engine(plan, adapter, records=submitting(plan, sent_attempt=1))
    assert (await engine.run()).counts == {State.SUBMIT_UNKNOWN: 1}
    assert adapter.submits == []
    assert rec.events("j0") == [Event.AMBIGUOUS]
    assert engine.records["j0"].error == (
        "the batch stopped while this job was being submitted and the provider cannot tell "
        "whether it was accepted; not re-sent (runner resume --resubmit-unknown re-sends it)"
    )
    assert output.jobs["j0"].outcome is not None
    assert output.jobs["j0"].outcome[0] is State.SUBMIT_UNKNOWN


async def test_a_provable_absence_sends_the_job_again() -> None:
    plan = make_plan(1)
    adapter = Reconciling(NotSubmittedError("no run on the job's own squid"))
    engine, _, rec = make_engine(plan, adapter, records=submitting(plan, sent_attempt=1))
    assert (await engine.run()).counts == {State.SUCCEEDED: 1}
    assert adapter.submits == ["j0"]
    assert rec.events("j0")[:2] == [Event.DEFERRED, Event.SUBMIT]


async def test_submit_unknown_is_left_alone_unless_resubmit_is_asked() -> None:
    plan = make_plan(2)
    left = records(plan, State.SUBMIT_UNKNOWN, attempts=1, error="x")
    adapter = FakeAdapter()
    engine, _, _ = make_engine(plan, adapter, records=left)
    assert (await engine.run()).counts == {State.SUBMIT_UNKNOWN: 2}
    assert adapter.submits == []
    again = records(plan, State.SUBMIT_UNKNOWN, attempts=1, error="x")
    engine, _, rec = make_engine(plan, adapter, records=again, resubmit_unknown=True)
    assert (await engine.run()).counts == {State.SUCCEEDED: 2}
    assert adapter.submits == ["j0", "j1"]  # in plan order
    assert rec.events("j0")[:2] == [Event.RESUBMIT, Event.SUBMIT]


# -- other states ----------------------------------------------------------------------------


async def test_resume_repolls_submitted_jobs_refetches_fetching_and_submits_planned() -> None:
    plan = make_plan(4)
    adapter = FakeAdapter(polls=lambda j, n: done())
    left = [
        JobRecord(plan.jobs[0], state=State.SUCCEEDED),
        JobRecord(plan.jobs[1], state=State.RUNNING, remote=RemoteRef("r1"), attempts=1),
        JobRecord(plan.jobs[2], state=State.FETCHING, remote=RemoteRef("r2"), attempts=1),
        JobRecord(plan.jobs[3]),
    ]
    engine, _, rec = make_engine(plan, adapter, records=left)
    output = ResettableOutput()
    engine.output = output
    assert (await engine.run()).counts == {State.SUCCEEDED: 4}
    assert adapter.submits == ["j3"]
    assert sorted(adapter.poll_log) == ["j1", "j2", "j3"]
    assert output.resets == ["j2"]  # a cut-off fetch starts from an empty directory
    assert rec.events("j0") == []
    assert rec.events("j2") == [Event.FETCHED]
    assert engine.lanes["spidra"].gate.jobs_in_flight == 0  # resumed jobs were counted


# -- the sent mark ---------------------------------------------------------------------------


class Transport:
    """Records, at each request, whether the job's sent mark was already journaled."""

    def __init__(self, journaled: list[str]) -> None:
        self.journaled = journaled
        self.seen: list[tuple[str, list[str]]] = []

    async def request(self, method: str, url: str, **kw: Any) -> Reply:
        self.seen.append((method, list(self.journaled)))
        return Reply(200, {}, b'{"id": "r-1"}')

    async def download(self, *a: Any, **kw: Any) -> tuple[Reply, int]:
        raise AssertionError("no download")

    async def aclose(self) -> None:
        pass


class TwoStepAdapter(FakeAdapter):
    async def submit(self, http: ProviderHttp, job: JobSpec) -> Any:
        await http.send(Request("GET", "/check", "status"))
        await http.send(Request("POST", "/jobs", "submit", json={}))
        await http.send(Request("POST", "/jobs/start", "submit", json={}))
        return await super().submit(http, job)


async def test_the_sent_mark_is_journaled_before_the_first_changing_request_leaves() -> None:
    plan = make_plan(1)
    adapter = TwoStepAdapter(polls=lambda j, n: done())
    journaled: list[str] = []

    class Journal:
        def transition(self, job: JobRecord, event: Event, previous: State) -> None:
            pass

        def polled(self, job: JobRecord, status: Status) -> None:
            pass

        def noted(self, job: JobRecord, key: str) -> None:
            journaled.append(f"{key}={job.notes[key]['attempt']}")

    transport = Transport(journaled)
    settings = plan.providers["spidra"]
    client = ProviderClient(
        provider="spidra",
        base_url=settings.base_url,
        api_key=settings.api_key,
        adapter=adapter,
        gate=Gate("spidra", settings.limits, pool_size=1),
        transport=transport,  # type: ignore[arg-type]
    )
    engine = Engine(
        plan,
        clients={"spidra": client},
        adapters={"spidra": adapter},
        output=FakeOutput(),
        recorders=[Journal()],
    )
    assert (await engine.run()).counts == {State.SUCCEEDED: 1}
    assert transport.seen == [
        ("GET", []),  # reading changes nothing: not marked
        ("POST", [f"{SENT_NOTE}=1"]),  # marked (and journaled) before it left
        ("POST", [f"{SENT_NOTE}=1"]),  # once per attempt
    ]


# -- interrupt, cancel -----------------------------------------------------------------------


async def test_interrupt_stops_submitting_and_detaches_by_default() -> None:
    plan = make_plan(6, limits=Limits(in_flight=2))
    adapter = FakeAdapter(polls=lambda j, n: status("active"))
    engine, _, _ = make_engine(plan, adapter, pool=2)

    async def stop_soon() -> None:
        while len(adapter.submits) < 2:
            await asyncio.sleep(0.001)
        engine.interrupt("interrupted by SIGINT")

    async with asyncio.TaskGroup() as tg:
        tg.create_task(stop_soon())
        result = await engine.run()
    assert engine.interrupted == "interrupted by SIGINT"
    counts = dict(result.counts)
    assert counts.pop(State.PLANNED) == 4  # never sent: left for resume
    assert sum(counts.values()) == 2
    assert set(counts) <= {State.QUEUED, State.RUNNING}  # detached: still running remotely
    assert adapter.cancels == []


async def test_interrupt_with_on_interrupt_cancel_cancels_remote_jobs() -> None:
    plan = make_plan(3)
    settings = dataclasses.replace(plan.providers["spidra"], on_interrupt="cancel")
    plan = dataclasses.replace(plan, providers={"spidra": settings})
    adapter = FakeAdapter(polls=lambda j, n: status("active"))
    engine, _, _ = make_engine(plan, adapter, pool=3)

    async def stop_soon() -> None:
        while len(adapter.submits) < 3:
            await asyncio.sleep(0.001)
        engine.interrupt("interrupted by SIGTERM")

    async with asyncio.TaskGroup() as tg:
        tg.create_task(stop_soon())
        result = await engine.run()
    assert result.counts == {State.CANCELLED: 3}
    assert sorted(adapter.cancels) == ["j0", "j1", "j2"]
    assert engine.records["j0"].error == "cancelled remotely on interrupt (on_interrupt: cancel)"


async def test_cancel_all_cancels_active_skips_planned_and_leaves_fetching() -> None:
    plan = make_plan(4)
    adapter = FakeAdapter()
    left = [
        JobRecord(plan.jobs[0], state=State.RUNNING, remote=RemoteRef("r0")),
        JobRecord(plan.jobs[1], state=State.PAUSED, remote=RemoteRef("r1")),
        JobRecord(plan.jobs[2], state=State.FETCHING, remote=RemoteRef("r2")),
        JobRecord(plan.jobs[3]),
    ]
    engine, _, _ = make_engine(plan, adapter, records=left)
    result = await engine.cancel_all()
    assert result.counts == {State.CANCELLED: 2, State.FETCHING: 1, State.SKIPPED: 1}
    assert sorted(adapter.cancels) == ["j0", "j1"]
    assert adapter.submits == []
    assert engine.records["j3"].error == "not submitted: the batch was cancelled (runner cancel)"


# -- paused jobs -----------------------------------------------------------------------------


def paused(reason: str = "no_account_available") -> Status:
    return Status(RemoteState.PAUSED, raw="paused", reason=reason)


def with_settings(plan: Plan, **changes: Any) -> Plan:
    settings = dataclasses.replace(plan.providers["spidra"], **changes)
    return dataclasses.replace(plan, providers={"spidra": settings})


async def test_a_job_paused_longer_than_max_paused_times_out_naming_the_reason() -> None:
    plan = with_settings(make_plan(1, timeout=30.0), max_paused=0.02, on_timeout="cancel")
    adapter = FakeAdapter(polls=lambda j, n: paused())
    engine, _, _ = make_engine(plan, adapter)
    assert (await engine.run()).counts == {State.TIMED_OUT: 1}
    assert engine.records["j0"].error == (
        "timed out: paused for longer than max_paused 0.02s "
        "(pause reason: no_account_available; cancel requested remotely)"
    )
    assert adapter.cancels == ["j0"]


async def test_time_spent_paused_does_not_count_against_the_timeout() -> None:
    # 0.06 s paused, then ~0.02 s running: past the 0.05 s timeout only if pauses counted.
    plan = with_settings(make_plan(1, timeout=0.05), max_paused=1.0)
    started: dict[str, float] = {}

    def script(job: str, n: int) -> Status:
        now = asyncio.get_running_loop().time()
        started.setdefault("t", now)
        elapsed = now - started["t"]
        if elapsed < 0.06:
            return paused()
        return done() if elapsed > 0.08 else status("active")

    engine, _, _ = make_engine(plan, FakeAdapter(polls=script))
    assert (await engine.run()).counts == {State.SUCCEEDED: 1}


# -- status.json -----------------------------------------------------------------------------


def test_scrub_replaces_remote_ids_inside_any_string_and_key() -> None:
    payload: Mapping[str, Any] = {
        "id": "run-abc123",
        "links": ["https://x/runs/run-abc123/download"],
        "by_id": {"run-abc123": 1, "n": 2},
        "squid": "sq-999",
    }
    assert scrub(payload, ["run-abc123", "sq-999"]) == {
        "id": "<remote id>",
        "links": ["https://x/runs/<remote id>/download"],
        "by_id": {"<remote id>": 1, "n": 2},
        "squid": "<remote id>",
    }
