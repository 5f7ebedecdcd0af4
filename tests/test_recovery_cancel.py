"""Interrupt and cancel paths of runner.engine.recovery, in process (the scripted adapter of
test_engine, no HTTP): what each cancel outcome does to a job, the one notice per provider
for jobs left running, and the tidy-up of never-sent submits. Found by make mutate: these
paths were proven only by e2e tests, which a mutation run leaves out."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from runner.engine import recovery
from runner.engine.recovery import (
    CANCELLED_BY_USER,
    CANCELLED_ON_INTERRUPT,
    CANCELLED_UNSENT,
    SENT_NOTE,
    not_cancelled_notice,
)
from runner.errors import ErrorKind, NotCancellableError
from runner.lifecycle import Event, JobRecord, State
from runner.plan import JobSpec, Plan
from runner.providers.base import ProviderHttp
from runner.remote import RemoteRef
from tests.test_engine import FakeAdapter, Recording, call_error, make_engine, make_plan

pytestmark = pytest.mark.anyio

NO_CANCEL = "provider has no cancel: its jobs run to the end"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Cancelling(FakeAdapter):
    """Accepts the cancel of `ok` jobs, cannot cancel `unsupported` ones, fails the rest."""

    def __init__(self, ok: set[str], unsupported: set[str], **kw: Any) -> None:
        super().__init__(**kw)
        self.ok, self.unsupported = ok, unsupported

    async def cancel(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> None:
        assert http is not None
        assert ref == RemoteRef(f"r-{job.id}")  # the job's own remote job, through its client
        self.cancels.append(job.id)
        if job.id in self.unsupported:
            raise NotCancellableError(NO_CANCEL)
        if job.id not in self.ok:
            raise call_error(ErrorKind.TRANSIENT)


def _on_interrupt_cancel(plan: Plan) -> Plan:
    settings = dataclasses.replace(plan.providers["spidra"], on_interrupt="cancel")
    return dataclasses.replace(plan, providers={"spidra": settings})


def _running(plan: Plan) -> list[JobRecord]:
    return [
        JobRecord(spec, state=State.RUNNING, remote=RemoteRef(f"r-{spec.id}")) for spec in plan.jobs
    ]


async def test_runner_cancel_cancels_detaches_or_reports_each_job_by_what_its_provider_said() -> (
    None
):
    plan = make_plan(4)
    adapter = Cancelling(ok={"j0"}, unsupported={"j1"})
    left = [*_running(plan)[:3], JobRecord(plan.jobs[3])]
    engine, _, rec = make_engine(plan, adapter, records=left)
    result = await engine.cancel_all()
    assert result.counts == {
        State.CANCELLED: 1,
        State.DETACHED: 1,
        State.RUNNING: 1,
        State.SKIPPED: 1,
    }
    j0, j1, j2, j3 = (engine.records[f"j{i}"] for i in range(4))
    assert (j0.state, j0.error) == (State.CANCELLED, CANCELLED_BY_USER)
    assert (j1.state, j1.error) == (State.DETACHED, NO_CANCEL)
    failed = "the remote cancel failed: spidra: POST /scrape: transient"
    assert (j2.state, j2.error) == (State.RUNNING, failed)  # still followed by runner resume
    assert engine.cancel_failures == [f"j2: {failed}"]
    assert (j3.state, j3.error) == (State.SKIPPED, CANCELLED_UNSENT)
    assert sorted(adapter.cancels) == ["j0", "j1", "j2"]
    assert rec.events("j1") == [Event.DETACH]
    assert engine.notices == []  # runner cancel says it per job, not in a notice


async def test_an_interrupt_keeps_jobs_it_cannot_cancel_and_names_them_in_one_notice() -> None:
    plan = _on_interrupt_cancel(make_plan(12))
    unsupported = {f"j{i}" for i in range(1, 12)}
    notified: list[tuple[str, dict[str, Any]]] = []
    engine, _, rec = make_engine(
        plan,
        Cancelling(ok={"j0"}, unsupported=unsupported),
        records=_running(plan),
        notify=lambda event, fields: notified.append((event, fields)),
    )
    await recovery.settle_interrupt(engine)
    assert engine.records["j0"].state is State.CANCELLED
    assert engine.records["j0"].error == CANCELLED_ON_INTERRUPT
    assert all(engine.records[i].state is State.RUNNING for i in unsupported)
    assert all(rec.events(i) == [] for i in unsupported)  # left for runner resume
    ids = [f"j{i}" for i in range(1, 12)]  # plan order (j2 before j10), however they ended
    message = f"spidra: j1, j2, j3, j4, j5 and 6 more not cancelled on interrupt: {NO_CANCEL}"
    assert engine.notices == [message]
    assert notified == [
        ("provider.no_cancel", {"message": message, "provider": "spidra", "job_ids": ids})
    ]


async def test_an_interrupt_cancels_nothing_where_on_interrupt_is_detach() -> None:
    plan = make_plan(2)
    adapter = Cancelling(ok={"j0", "j1"}, unsupported=set())
    engine, _, _ = make_engine(plan, adapter, records=_running(plan))
    await recovery.settle_interrupt(engine)
    assert adapter.cancels == []
    assert {job.state for job in engine.records.values()} == {State.RUNNING}


async def test_an_interrupt_plans_again_a_submit_that_never_left_and_keeps_a_sent_one() -> None:
    plan = make_plan(2)
    unsent = JobRecord(plan.jobs[0], state=State.SUBMITTING, attempts=1)
    sent = JobRecord(
        plan.jobs[1],
        state=State.SUBMITTING,
        attempts=1,
        notes={SENT_NOTE: {"attempt": 1, "at": 5.0}},
    )
    engine, _, rec = make_engine(plan, FakeAdapter(), records=[unsent, sent])
    await recovery.settle_interrupt(engine)
    assert (unsent.state, sent.state) == (State.PLANNED, State.SUBMITTING)
    assert rec.events("j0") == [Event.DEFERRED]
    assert rec.events("j1") == []


async def test_runner_cancel_reconciles_a_sent_submit_and_cancels_it_when_found() -> None:
    plan = make_plan(2)

    class Found(FakeAdapter):
        async def reconcile(
            self, http: ProviderHttp, job: JobSpec, since: float
        ) -> RemoteRef | None:
            return RemoteRef(f"found-{job.id}") if job.id == "j0" else None

    sent = {SENT_NOTE: {"attempt": 1, "at": 5.0}}
    left = [
        JobRecord(spec, state=State.SUBMITTING, attempts=1, notes=dict(sent)) for spec in plan.jobs
    ]
    adapter = Found()
    engine, _, _ = make_engine(plan, adapter, records=left)
    await engine.cancel_all()
    assert adapter.cancels == ["j0"]
    assert engine.records["j0"].state is State.CANCELLED
    assert engine.records["j1"].state is State.SUBMIT_UNKNOWN  # not found: never re-sent
    assert adapter.submits == []


def test_the_not_cancelled_notice_names_at_most_five_jobs() -> None:
    assert (
        not_cancelled_notice("lobstr", ["a"], "why") == "lobstr: a not cancelled on interrupt: why"
    )
    five = [f"s-{i}" for i in range(5)]
    assert not_cancelled_notice("lobstr", five, "why") == (
        "lobstr: s-0, s-1, s-2, s-3, s-4 not cancelled on interrupt: why"
    )
    assert not_cancelled_notice("lobstr", [*five, "s-5"], "why") == (
        "lobstr: s-0, s-1, s-2, s-3, s-4 and 1 more not cancelled on interrupt: why"
    )


async def test_a_sent_mark_without_a_time_reconciles_from_the_epoch() -> None:
    plan = make_plan(1)
    seen: list[float] = []

    class Asked(FakeAdapter):
        async def reconcile(
            self, http: ProviderHttp, job: JobSpec, since: float
        ) -> RemoteRef | None:
            seen.append(since)
            return None

    left = [
        JobRecord(
            plan.jobs[0], state=State.SUBMITTING, attempts=1, notes={SENT_NOTE: {"attempt": 1}}
        )
    ]
    engine, _, _ = make_engine(plan, Asked(), records=left)
    await engine.cancel_all()
    assert seen == [0.0]  # no time recorded: every listing entry may be it


async def test_a_resubmitted_unknown_job_drops_the_old_error_when_it_is_sent_again() -> None:
    plan = make_plan(1)
    left = [JobRecord(plan.jobs[0], state=State.SUBMIT_UNKNOWN, attempts=1, error="unknown")]
    engine, _, _ = make_engine(plan, FakeAdapter(), records=left, resubmit_unknown=True)
    errors: list[tuple[Event, str | None]] = []

    class Errors(Recording):
        def transition(self, job: JobRecord, event: Event, previous: State) -> None:
            errors.append((event, job.error))

    engine.recorders.append(Errors())
    await engine.run()
    assert errors[0] == (Event.RESUBMIT, None)
