"""Request limits: the GCRA pacer under stalls, AIMD after 429s, the Gate on a real loop,
and the rate-limit header parsing the Gate is fed from."""

from __future__ import annotations

import heapq
import itertools
import math
import random
from datetime import UTC, datetime
from email.utils import format_datetime

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.http.limits import (
    SAFETY,
    Aimd,
    Change,
    Gate,
    Outage,
    OutagePolicy,
    Pacer,
    pool_size_for,
)
from runner.http.ratelimit_headers import (
    RateLimitInfo,
    parse_rate_limit,
    parse_retry_after,
    wait_hint,
)
from runner.plan import Limits, Rate

NOW = 1_800_000_000.0  # a fixed unix time for header parsing


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the pacer, driven by a simulated clock -------------------------------------------------


def simulate(pacer: Pacer, arrivals: list[float], stalls: list[float]) -> list[float]:
    """Run `acquire` for waiters arriving at `arrivals`, each wake-up late by a stall.

    Mirrors Pacer.acquire step by step (reserve, sleep, admit until 0) on a discrete event
    queue, so the property covers the real decision code with an injected clock.
    """
    events: list[tuple[float, int, int, bool]] = []  # (time, seq, waiter, reserved)
    for i, t in enumerate(arrivals):
        heapq.heappush(events, (t, i, i, False))
    seq = len(arrivals)
    released: list[float] = []
    wakeups = 0
    while events:
        now, _, waiter, reserved = heapq.heappop(events)
        wait = pacer.admit(now) if reserved else pacer.reserve(now)
        if reserved and wait <= 0:
            released.append(now)
            continue
        if not reserved and wait <= 0:
            wait = pacer.admit(now)
            if wait <= 0:
                released.append(now)
                continue
        late = stalls[wakeups % len(stalls)] if stalls else 0.0
        wakeups += 1
        seq += 1
        heapq.heappush(events, (now + wait + late, seq, waiter, True))
    return released


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - window + 1e-12:
            j += 1
        best = max(best, i - j + 1)
    return best


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=500.0),
    burst=st.integers(min_value=1, max_value=5),
    arrivals=st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=60),
    stalls=st.lists(st.floats(min_value=0.0, max_value=0.5), max_size=10),
    window=st.floats(min_value=0.01, max_value=3.0),
)
def test_pacer_never_exceeds_rate_plus_burst_in_any_window(
    rate: float, burst: int, arrivals: list[float], stalls: list[float], window: float
) -> None:
    pacer = Pacer(rate, burst)
    released = simulate(pacer, arrivals, stalls)
    assert len(released) == len(arrivals)  # everyone gets through
    # GCRA(T, tau): any closed window of length W holds at most floor(W/T) + burst releases.
    allowed = math.floor(window * rate + 1e-9) + burst
    assert max_in_window(released, window) <= allowed


def test_pacer_burst_one_spaces_releases_evenly_and_keeps_fifo_reservations() -> None:
    pacer = Pacer(10.0)
    released = simulate(pacer, [0.0] * 5, [])
    assert released == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_stall_guard_does_not_release_overdue_waiters_back_to_back() -> None:
    pacer = Pacer(10.0)
    # every wake-up is 0.35 s late (an event-loop stall): without the guard the overdue
    # waiters would go out together
    released = simulate(pacer, [0.0] * 4, [0.35])
    gaps = [b - a for a, b in itertools.pairwise(released)]
    assert min(gaps) >= 0.1 - 1e-9


def test_pause_holds_every_release_until_it_ends() -> None:
    pacer = Pacer(100.0)
    pacer.pause(2.0)
    released = simulate(pacer, [0.0, 0.0, 1.0], [])
    assert released[0] == pytest.approx(2.0)
    assert released == sorted(released)
    assert min(b - a for a, b in itertools.pairwise(released)) >= 0.01 - 1e-9


# -- AIMD ------------------------------------------------------------------------------------


def test_aimd_halves_once_per_round_and_recovers_linearly() -> None:
    aimd = Aimd(ceiling=10.0, recovery=20.0)
    assert aimd.rate(0.0) == 10.0
    assert aimd.throttled(sent_at=0.9, now=1.0)
    assert aimd.rate(1.0) == pytest.approx(5.0)
    # a second 429 for a request sent before the cut is the same event: no second halving
    assert not aimd.throttled(sent_at=0.95, now=1.01)
    assert aimd.rate(1.0) == pytest.approx(5.0)
    # +ceiling/recovery = 0.5 req/s per second
    assert aimd.rate(3.0) == pytest.approx(6.0)
    assert aimd.rate(100.0) == 10.0


def test_aimd_converges_below_an_overdeclared_limit() -> None:
    """Declared 20/s, the provider really allows 8/s: the rate saws around 8, never storms."""
    real = 8.0
    aimd = Aimd(ceiling=20.0, recovery=10.0)
    t = 0.0
    over = 0.0
    samples = []
    while t < 200.0:
        rate = aimd.rate(t)
        if rate > real:
            aimd.throttled(sent_at=t - 0.01, now=t)
            over += 1
        samples.append(aimd.rate(t))
        t += 0.25
    late = samples[len(samples) // 2 :]
    assert max(late) <= real + 20.0 / 10.0 * 0.25 + 1e-9  # one step above at most
    assert min(late) >= real * 0.5 - 1e-9  # one halving below at most
    assert sum(late) / len(late) > real * 0.6  # it uses most of the real limit
    assert over / 200.0 < 0.6  # about one 429 per sawtooth (~2 s), not a storm


def test_aimd_never_drops_below_its_floor() -> None:
    aimd = Aimd(ceiling=64.0)
    for i in range(50):
        aimd.throttled(sent_at=i * 1e-6, now=i * 1e-6 + 1e-7)
    assert aimd.rate(50e-6) == pytest.approx(1.0, rel=0.01)


# -- the gate, on the real event loop with tiny durations -----------------------------------


@pytest.mark.anyio
async def test_gate_paces_requests_at_safety_times_declared_rate() -> None:
    gate = Gate("p", Limits(requests=Rate(100, 1.0)), pool_size=4)
    times: list[float] = []

    async def one() -> None:
        async with gate.request("status") as sent_at:
            times.append(sent_at)

    async with anyio.create_task_group() as tg:
        for _ in range(11):
            tg.start_soon(one)
    times.sort()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 1 / (100 * SAFETY) - 1e-6
    assert gate.sent == 11


@pytest.mark.anyio
async def test_gate_bounds_requests_in_flight_by_pool_size() -> None:
    gate = Gate("p", Limits(), pool_size=3)
    current = 0
    peak = 0

    async def one() -> None:
        nonlocal current, peak
        async with gate.request("status"):
            current += 1
            peak = max(peak, current)
            await anyio.sleep(0.005)
            current -= 1

    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(one)
    assert peak == 3


@pytest.mark.anyio
async def test_gate_throttle_pauses_the_whole_provider_and_cuts_the_rate() -> None:
    gate = Gate(
        "p",
        Limits(requests=Rate(1000, 1.0), endpoints={"submit": Rate(1000, 1.0)}),
        pool_size=2,
    )
    start = gate.clock.now()
    gate.throttled("submit", sent_at=start, wait=0.05)
    assert gate.requests is not None
    assert gate.requests.aimd.rate(gate.clock.now()) < 1000 * SAFETY * 0.6
    async with gate.request("status") as sent_at:
        assert sent_at - start >= 0.05 - 1e-6


@pytest.mark.anyio
async def test_gate_without_budgets_still_honours_a_pause() -> None:
    gate = Gate("p", Limits(), pool_size=2)
    start = gate.clock.now()
    gate.pause(0.03)
    async with gate.request("status") as sent_at:
        assert sent_at - start >= 0.03 - 1e-6


@pytest.mark.anyio
async def test_gate_learns_policy_and_pauses_on_empty_quota() -> None:
    gate = Gate("p", Limits(requests=Rate(100, 1.0)), pool_size=2)
    gate.observe(RateLimitInfo(limit=10, remaining=0, reset=0.02, window=1.0))
    assert gate.requests is not None
    assert gate.requests.aimd.ceiling == pytest.approx(10 * SAFETY)
    assert gate.paused_until > gate.clock.now()


def test_remote_job_cap() -> None:
    gate = Gate("p", Limits(in_flight=2), pool_size=2)
    assert gate.can_submit()
    gate.jobs_in_flight = 2
    assert not gate.can_submit()


def test_pool_size_follows_littles_law_within_bounds() -> None:
    assert pool_size_for(Limits(requests=Rate(300, 900.0))) == 4
    assert pool_size_for(Limits(requests=Rate(40, 1.0))) == 10
    assert pool_size_for(Limits(requests=Rate(1000, 1.0))) == 16
    assert pool_size_for(Limits()) == 16


# -- header parsing ---------------------------------------------------------------------------


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 1.5 ", NOW) == 1.5
    date = format_datetime(datetime.fromtimestamp(NOW + 3600, UTC), usegmt=True)
    assert parse_retry_after(date, NOW) == pytest.approx(3600.0)
    past = format_datetime(datetime.fromtimestamp(NOW - 10, UTC), usegmt=True)
    assert parse_retry_after(past, NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("-3", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_long_waits_are_never_clamped() -> None:
    assert wait_hint({"Retry-After": "86400"}, NOW) == 86400.0


def test_draft6_headers_and_x_prefixed_variant() -> None:
    info = parse_rate_limit(
        {"RateLimit-Limit": "300", "RateLimit-Remaining": "0", "RateLimit-Reset": "42"}, NOW
    )
    assert info == RateLimitInfo(limit=300, remaining=0, reset=42, window=None)
    x = parse_rate_limit(
        {"x-ratelimit-limit": "60", "x-ratelimit-remaining": "7", "x-ratelimit-reset": "5"}, NOW
    )
    assert x == RateLimitInfo(limit=60, remaining=7, reset=5, window=None)


def test_reset_as_unix_time_becomes_a_delay() -> None:
    info = parse_rate_limit({"RateLimit-Reset": str(int(NOW + 30))}, NOW)
    assert info is not None
    assert info.reset == pytest.approx(30.0)


def test_draft6_policy_gives_a_window() -> None:
    info = parse_rate_limit(
        {"RateLimit-Limit": "100", "RateLimit-Remaining": "50", "RateLimit-Policy": "100;w=60"},
        NOW,
    )
    assert info is not None
    assert info.policy_rate == pytest.approx(100 / 60)


def test_draft7_combined_field() -> None:
    info = parse_rate_limit({"RateLimit": "limit=100, remaining=0, reset=7"}, NOW)
    assert info == RateLimitInfo(limit=100, remaining=0, reset=7, window=None)


def test_draft8_field_with_policy() -> None:
    info = parse_rate_limit(
        {"RateLimit": '"default";r=0;t=12', "RateLimit-Policy": '"default";q=300;w=900'}, NOW
    )
    assert info == RateLimitInfo(limit=300, remaining=0, reset=12, window=900)
    assert info.policy_rate == pytest.approx(1 / 3)


def test_draft8_lists_several_policies_and_the_first_is_used() -> None:
    info = parse_rate_limit({"RateLimit": '"burst";r=5;t=1, "day";r=900;t=3600'}, NOW)
    assert info == RateLimitInfo(limit=None, remaining=5, reset=1, window=None)


def test_no_rate_limit_headers() -> None:
    assert parse_rate_limit({"content-type": "application/json"}, NOW) is None
    assert parse_rate_limit({"RateLimit": "garbage"}, NOW) is None


def test_wait_hint_order_retry_after_then_reset_then_body() -> None:
    both = {"Retry-After": "3", "RateLimit-Remaining": "0", "RateLimit-Reset": "9"}
    assert wait_hint(both, NOW, 60) == 3.0
    exhausted = {"RateLimit-Remaining": "0", "RateLimit-Reset": "9"}
    assert wait_hint(exhausted, NOW, 60) == 9.0
    # a reset with quota left is not a reason to wait, unless the reply was a 429
    assert wait_hint({"RateLimit-Remaining": "4", "RateLimit-Reset": "9"}, NOW, 60) == 60
    assert wait_hint({"RateLimit-Reset": "9"}, NOW, throttled=True) == 9.0
    assert wait_hint({}, NOW, 60) == 60
    assert wait_hint({}, NOW) is None


class StillClock:
    def now(self) -> float:
        return 100.0

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("nothing waits here")


def test_a_new_pause_is_reported_once_with_its_reason() -> None:
    clock = StillClock()
    gate = Gate("spidra", Limits(requests=Rate(10, 1.0)), pool_size=2, clock=clock)
    seen: list[tuple[float, str]] = []
    gate.on_pause = lambda seconds, reason: seen.append((seconds, reason))
    gate.throttled("status", clock.now(), 5.0, "GET /scrape/x: HTTP 429")
    gate.throttled("status", clock.now(), 2.0, "GET /scrape/y: HTTP 429")  # inside the pause
    assert seen == [(5.0, "GET /scrape/x: HTTP 429")]


# -- the outage state -----------------------------------------------------------------------


def outage(answered: bool = True, **policy: float) -> Outage:
    state = Outage(OutagePolicy(**policy), random.Random(7))  # type: ignore[arg-type]
    state.answered = answered
    return state


def test_an_outage_starts_once_and_only_the_probe_moves_it_on() -> None:
    state = outage(base=1.0, cap=60.0)
    assert state.failed(10.0, "connection reset", probe=False) is Change.OUTAGE
    first = state.next_probe_at
    assert 10.5 <= first <= 11.0  # uniform(base/2, base)
    # requests that were under way when it began say nothing new
    assert state.failed(10.2, "connection refused", probe=False) is Change.NONE
    assert (state.failures, state.next_probe_at) == (1, first)
    assert state.failed(11.0, "connection refused", probe=True) is Change.PROBE_LATER
    assert state.failures == 2
    assert 12.0 <= state.next_probe_at <= 13.0  # the ceiling doubled
    assert state.reason == "connection refused"


def test_probe_backoff_is_jittered_and_capped() -> None:
    state = outage(base=1.0, cap=8.0)
    state.failed(0.0, "x", probe=False)
    delays = []
    for _ in range(200):
        now = state.next_probe_at
        state.failed(now, "x", probe=True)
        delays.append(state.next_probe_at - now)
    assert all(4.0 <= d <= 8.0 for d in delays[3:])  # capped at 8, never below cap / 2
    assert len({round(d, 6) for d in delays}) > 100  # jittered: probes of many runners spread


def test_an_answer_below_500_ends_it_and_says_how_long_it_lasted() -> None:
    state = outage()
    state.failed(5.0, "x", probe=False)
    assert state.heard(6.0, 502) is None  # a 5xx: still down
    assert state.down
    assert state.heard(9.5, 404) == 4.5
    assert state.down_since is None
    assert state.failures == 0
    assert state.heard(10.0, 200) is None  # nothing was down


def test_a_provider_that_never_answered_is_given_up_after_its_first_contact_tries() -> None:
    state = outage(answered=False, first_contact_tries=3)
    assert state.failed(0.0, "connection refused", probe=False) is Change.PROBE_LATER  # quiet
    assert state.failed(0.1, "connection refused", probe=False) is Change.NONE
    assert state.failed(1.0, "connection refused", probe=True) is Change.PROBE_LATER
    assert state.failed(3.0, "connection refused", probe=True) is Change.GIVE_UP


def test_a_provider_that_answered_once_is_never_given_up() -> None:
    state = outage(answered=True, first_contact_tries=3)
    changes = [state.failed(float(i), "x", probe=True) for i in range(50)]
    assert Change.GIVE_UP not in changes
