"""What the engine passes the poll backoff: the interval grows poll after poll, as the policy
says (backoff's own tests check the function; this checks the engine uses it)."""

from __future__ import annotations

import dataclasses
import itertools

import anyio
import pytest

from runner.http.backoff import poll_ceiling
from runner.plan import PollPolicy
from runner.remote import RemoteState, Status
from tests.test_engine import FakeAdapter, done, make_engine, make_plan, status

pytestmark = pytest.mark.anyio

POLICY = PollPolicy(initial=0.01, max=0.16, multiplier=2.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_the_engine_grows_the_poll_interval_after_every_poll() -> None:
    seen: list[float] = []

    def answer(job: str, n: int) -> Status:
        seen.append(anyio.current_time())
        return done() if n >= 7 else status("active", RemoteState.RUNNING)

    plan = make_plan(1)
    job = dataclasses.replace(plan.jobs[0], poll=POLICY)
    plan = dataclasses.replace(plan, jobs=(job,))
    engine, _, _ = make_engine(plan, FakeAdapter(polls=answer))
    await engine.run()
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert len(gaps) == 6
    for k, gap in enumerate(gaps, start=1):
        # interval k is drawn from [c_k / multiplier, c_k]: never shorter than that floor
        floor = poll_ceiling(POLICY, k) / POLICY.multiplier
        assert gap >= floor - 0.002, (k, gap, floor)
    assert gaps[-1] > 2 * gaps[0]
