"""A step of the wall clock (NTP, suspend/resume, a migrated VM) neither stalls nor storms:
deadlines and polls run on the monotonic clock, wall time only stamps records, and a date a
provider sends is read on the provider's own clock (its `Date` header)."""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate

import anyio
import pytest

from runner.http.backoff import poll_ceiling
from runner.http.ratelimit_headers import parse_rate_limit, server_now, wait_hint
from runner.lifecycle import JobRecord, State
from runner.plan import PollPolicy
from runner.remote import RemoteRef, RemoteState, Status
from tests.test_engine import FakeAdapter, done, make_engine, make_plan, status

WALL = 1_800_000_000.0  # 2027-01-15, a unix time the tests pin
DAY = 86_400.0
POLICY = PollPolicy(initial=0.01, max=0.16, multiplier=2.0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def jumping_wall() -> Callable[[], float]:
    """A wall clock stepped a day forward, then a day back, on every other read."""
    steps: Iterator[float] = itertools.cycle((DAY, -DAY, 0.0))
    real = time.time
    return lambda: real() + next(steps)


def http_date(unix: float) -> str:
    return formatdate(unix, usegmt=True)


# -- the engine: scheduling never reads the wall clock ----------------------------------------


@pytest.mark.anyio
async def test_polls_keep_their_intervals_while_the_wall_clock_jumps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every reader of time.time, inside or outside the engine, sees the jumps: any deadline
    # or poll computed from it would fire at once (a storm) or a day late (a stall).
    wall = jumping_wall()
    monkeypatch.setattr(time, "time", wall)
    seen: list[float] = []

    def answer(job: str, n: int) -> Status:
        seen.append(anyio.current_time())
        return done() if n >= 5 else status("active", RemoteState.RUNNING)

    plan = make_plan(1)
    plan = dataclasses.replace(plan, jobs=(dataclasses.replace(plan.jobs[0], poll=POLICY),))
    engine, _, _ = make_engine(plan, FakeAdapter(polls=answer), wall=wall)
    with anyio.fail_after(5):
        assert (await engine.run()).counts == {State.SUCCEEDED: 1}
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    assert len(gaps) == 4
    for k, gap in enumerate(gaps, start=1):
        floor = poll_ceiling(POLICY, k) / POLICY.multiplier
        assert gap >= floor - 0.002, (k, gap, floor)


@pytest.mark.anyio
async def test_a_job_times_out_on_time_while_the_wall_clock_jumps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wall = jumping_wall()
    monkeypatch.setattr(time, "time", wall)
    adapter = FakeAdapter(polls=lambda j, n: status("active"))
    engine, _, _ = make_engine(make_plan(1, timeout=0.05), adapter, wall=wall)
    started = anyio.current_time()
    with anyio.fail_after(5):
        assert (await engine.run()).counts == {State.TIMED_OUT: 1}
    assert anyio.current_time() - started < 2.0
    assert engine.records["j0"].error == "timed out after 0.05s (left running remotely)"


@pytest.mark.anyio
async def test_records_take_their_times_from_the_injected_wall_clock() -> None:
    engine, _, _ = make_engine(make_plan(1), FakeAdapter(), wall=lambda: WALL)
    await engine.run()
    record = engine.records["j0"]
    assert record.submitted_at == WALL
    assert record.finished_at == WALL
    assert record.next_poll_at is not None
    assert WALL <= record.next_poll_at <= WALL + 1.0  # the wall time of a monotonic due time


# -- resume: the only place wall time is compared across runs ---------------------------------


@pytest.mark.anyio
async def test_a_resumed_job_keeps_its_timeout_when_the_wall_clock_stepped_back() -> None:
    # Submitted at what the wall clock then said; it has since been stepped back a day.
    # Before: elapsed came out at minus one day and the 50 ms timeout became a day.
    plan = make_plan(1, timeout=0.05)
    job = JobRecord(
        plan.jobs[0], state=State.QUEUED, remote=RemoteRef("r-j0"), submitted_at=WALL + DAY
    )
    adapter = FakeAdapter(polls=lambda j, n: status("active"))
    engine, _, _ = make_engine(plan, adapter, records=[job], wall=lambda: WALL)
    with anyio.fail_after(5):
        assert (await engine.run()).counts == {State.TIMED_OUT: 1}
    assert adapter.poll_log  # it was polled: the timeout started afresh, not already spent


@pytest.mark.anyio
async def test_a_resumed_job_whose_wall_time_ran_out_times_out_once_without_polls() -> None:
    # A day of wall time since the submit (or the wall clock stepped a day forward: from the
    # records alone the two look the same): the job is over its 30 s timeout at once, and
    # timing it out costs the provider nothing.
    plan = make_plan(3, timeout=30.0)
    jobs = [
        JobRecord(s, state=State.RUNNING, remote=RemoteRef(f"r-{s.id}"), submitted_at=WALL - DAY)
        for s in plan.jobs
    ]
    adapter = FakeAdapter(polls=lambda j, n: status("active"))
    engine, _, _ = make_engine(plan, adapter, records=jobs, wall=lambda: WALL)
    with anyio.fail_after(5):
        assert (await engine.run()).counts == {State.TIMED_OUT: 3}
    assert adapter.poll_log == []
    assert engine.records["j2"].error == "timed out after 30s (left running remotely)"


# -- a provider's dates, read on the provider's clock -----------------------------------------


@pytest.mark.parametrize("skew", [DAY, 3600.0, -3600.0, -DAY])
def test_a_retry_after_date_waits_what_the_provider_meant_whatever_our_clock_says(
    skew: float,
) -> None:
    # The provider says "retry at its now + 120 s" and stamps its reply with its now.
    # Before: a clock ahead of it read 0 (every retry at once), one behind read hours.
    headers = {"Retry-After": http_date(WALL + 120), "Date": http_date(WALL)}
    assert wait_hint(headers, WALL + skew, throttled=True) == 120.0


@pytest.mark.parametrize("skew", [3600.0, -3600.0])
def test_a_unix_reset_time_is_read_on_the_providers_clock(skew: float) -> None:
    headers = {
        "X-RateLimit-Limit": "100",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(WALL + 30)),
        "Date": http_date(WALL),
    }
    info = parse_rate_limit(headers, WALL + skew)
    assert info is not None
    assert info.reset == 30.0
    assert wait_hint(headers, WALL + skew) == 30.0


def test_without_a_readable_date_our_own_clock_is_the_reference() -> None:
    retry = http_date(WALL + 120)
    assert wait_hint({"Retry-After": retry}, WALL + 60) == 60.0
    assert wait_hint({"Retry-After": retry, "Date": "yesterday"}, WALL + 60) == 60.0
    assert wait_hint({"Retry-After": retry, "Date": ""}, WALL + 60) == 60.0
    assert server_now({}, WALL) == WALL


def test_a_date_without_a_zone_claim_is_utc() -> None:
    # RFC 5322 "-0000": the time is UTC, the sender just does not say where it is.
    stamp = format_datetime(datetime.fromtimestamp(WALL, UTC).replace(tzinfo=None))
    assert stamp.endswith("-0000")
    assert server_now({"date": stamp}, 0.0) == WALL
    assert server_now({"DATE": http_date(WALL)}, 0.0) == WALL


def test_a_delay_in_seconds_needs_no_clock_at_all() -> None:
    headers = {"Retry-After": "7", "Date": http_date(WALL)}
    assert wait_hint(headers, WALL + DAY) == 7.0
    assert wait_hint(headers, WALL - DAY) == 7.0
