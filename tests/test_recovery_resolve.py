"""recovery.resolve_submitting, in process: a job the journal left in `submitting` with its
submit sent is reconciled, and only one found (queued) is polled, at once. Found by make
mutate: a found job's first poll 1 s late, or a poll scheduled for a job that reconciled to
`planned` or `submit_unknown`, went unnoticed."""

from __future__ import annotations

import pytest

from runner.engine import recovery
from runner.engine.recovery import SENT_NOTE
from runner.errors import NotSubmittedError
from runner.lifecycle import JobRecord, State
from runner.plan import JobSpec
from runner.providers.base import ProviderHttp
from runner.remote import RemoteRef
from tests.test_engine import FakeAdapter, make_engine, make_plan

pytestmark = pytest.mark.anyio

WALL = 1_800_000_000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Reconciling(FakeAdapter):
    """Reconciles a job to `answer`: a remote ref (found), None (no answer) or an error."""

    def __init__(self, answer: RemoteRef | Exception | None) -> None:
        super().__init__()
        self.answer = answer

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _sent(spec: JobSpec) -> JobRecord:
    return JobRecord(
        spec, state=State.SUBMITTING, attempts=1, notes={SENT_NOTE: {"attempt": 1, "at": 5.0}}
    )


async def test_a_found_submit_is_polled_at_once() -> None:
    plan = make_plan(1)
    engine, _, _ = make_engine(plan, Reconciling(RemoteRef("found")), wall=lambda: WALL)
    job = _sent(plan.jobs[0])
    lane = engine.lanes["spidra"]
    assert await recovery.resolve_submitting(engine, lane, job) is State.QUEUED
    assert job.remote == RemoteRef("found")
    assert [entry[2] for entry in lane.polls] == [job]
    assert job.next_poll_at == WALL  # due now, not a second later
    assert lane.polls[0][0] <= lane.gate.clock.now()


@pytest.mark.parametrize(
    ("answer", "state"),
    [(NotSubmittedError("absent"), State.PLANNED), (None, State.SUBMIT_UNKNOWN)],
    ids=["provably-absent", "no-answer"],
)
async def test_a_submit_not_found_is_never_polled(answer: Exception | None, state: State) -> None:
    plan = make_plan(1)
    engine, _, _ = make_engine(plan, Reconciling(answer), wall=lambda: WALL)
    job = _sent(plan.jobs[0])
    lane = engine.lanes["spidra"]
    assert await recovery.resolve_submitting(engine, lane, job) is state
    assert lane.polls == []
    assert job.next_poll_at is None


async def test_a_found_submit_is_not_polled_once_the_batch_is_stopping() -> None:
    plan = make_plan(1)
    engine, _, _ = make_engine(plan, Reconciling(RemoteRef("found")), wall=lambda: WALL)
    engine.interrupted = "cancelled"
    job = _sent(plan.jobs[0])
    lane = engine.lanes["spidra"]
    assert await recovery.resolve_submitting(engine, lane, job) is State.QUEUED
    assert lane.polls == []
