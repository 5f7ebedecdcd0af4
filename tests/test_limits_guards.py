"""Pacer, AIMD and Gate details on an injected clock, found unguarded by the mutation run
(make mutate): exact waits, the burst after a rate change, a lowered ceiling, a 429's pause.
"""

from __future__ import annotations

import math
import random

import pytest

from runner.http.limits import (
    DEFAULT_PAUSE,
    MIN_FRACTION,
    SAFETY,
    Aimd,
    Bucket,
    Gate,
    Outage,
    OutagePolicy,
    Pacer,
)
from runner.http.ratelimit_headers import RateLimitInfo
from runner.plan import Limits, Rate


class SteppedClock:
    """Monotonic time that moves only when something sleeps; every sleep is recorded."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


@pytest.mark.anyio
async def test_the_gate_sends_at_safety_times_the_declared_rate_on_an_injected_clock() -> None:
    clock = SteppedClock(50.0)
    gate = Gate("p", Limits(requests=Rate(100, 1.0)), pool_size=4, clock=clock)
    sent: list[float] = []
    for _ in range(5):
        async with gate.request("status") as at:
            sent.append(at)
    interval = 1 / (100 * SAFETY)
    assert sent == pytest.approx([50.0 + k * interval for k in range(5)])
    assert clock.sleeps == pytest.approx([interval] * 4)
    assert gate.sent == 5


@pytest.mark.anyio
async def test_the_pacer_sleeps_only_when_it_must_and_exactly_as_long() -> None:
    clock = SteppedClock()
    pacer = Pacer(rate=2.0)
    await pacer.acquire(clock)
    assert clock.sleeps == []  # the first request goes at once: no sleep(0) either
    await pacer.acquire(clock)
    assert clock.sleeps == [0.5]


def test_a_new_rate_keeps_the_burst_and_sets_the_interval() -> None:
    pacer = Pacer(rate=10.0, burst=3)
    pacer.set_rate(20.0)
    assert pacer.rate == pytest.approx(20.0)
    waits = [pacer.reserve(0.0) for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.05])  # 3 back to back, then 1/20 s


def test_a_lowered_ceiling_caps_the_rate_and_moves_its_floor() -> None:
    aimd = Aimd(10.0)
    aimd.lower_ceiling(4.0)
    assert aimd.rate(0.0) == 4.0
    assert aimd.throttled(sent_at=0.0, now=0.0)
    assert aimd.rate(0.0) == pytest.approx(2.0)  # halved from the lowered ceiling
    for _ in range(20):
        aimd.throttled(sent_at=0.0, now=0.0)
    assert aimd.rate(0.0) == pytest.approx(4.0 * MIN_FRACTION)
    assert aimd.rate(1_000.0) == 4.0  # recovers to the lowered ceiling, not the old one
    aimd.lower_ceiling(8.0)  # a higher policy never raises it
    assert aimd.ceiling == 4.0


def test_a_429_pauses_the_provider_cuts_the_endpoint_budget_and_is_counted() -> None:
    clock = SteppedClock(10.0)
    limits = Limits(requests=Rate(10, 1.0), endpoints={"status": Rate(5, 1.0)})
    gate = Gate("p", limits, pool_size=2, clock=clock)
    seen: list[tuple[float, str]] = []
    gate.on_pause = lambda seconds, reason: seen.append((seconds, reason))
    gate.throttled("status", 10.0, None)
    assert gate.paused_until == 10.0 + DEFAULT_PAUSE
    assert seen == [(DEFAULT_PAUSE, "throttled")]
    assert gate.endpoints["status"].aimd.decreases == 1
    assert gate.requests is not None
    assert gate.requests.aimd.decreases == 1
    gate.throttled("status", 10.0, 3.0, "GET /x: HTTP 429")
    assert gate.throttles == 2
    assert gate.paused_until == 13.0


# -- found by the second mutation run ---------------------------------------------------------


class FixedRandom(random.Random):
    """An rng whose every draw is `value`: the jitter's two ends, exactly."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_a_pacer_refuses_a_rate_or_burst_it_cannot_keep(rate: float, burst: int) -> None:
    with pytest.raises(ValueError) as caught:
        Pacer(rate, burst)
    assert str(caught.value) == "a pacer needs rate > 0 and burst >= 1"


def test_a_paused_pacer_books_from_the_end_of_the_pause() -> None:
    pacer = Pacer(rate=2.0)
    pacer.pause(5.0)
    assert pacer.reserve(0.0) == 5.0
    assert pacer.reserve(0.0) == 5.5  # the next slot is one interval after the pause


def test_admit_lets_the_burst_through_then_one_per_interval_and_counts_releases() -> None:
    pacer = Pacer(rate=2.0, burst=3)
    assert pacer.released == 0
    assert [pacer.admit(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pacer.admit(0.0) == 0.5
    assert pacer.admit(0.25) == 0.25  # waits are measured from `now`
    assert pacer.released == 3
    assert pacer.admit(0.5) == 0.0  # exactly on time is in time, and recorded
    assert pacer.admit(0.5) == 0.5
    assert pacer.released == 4


@pytest.mark.anyio
async def test_acquire_waits_for_the_stall_guard_even_when_its_booking_was_free() -> None:
    # A release already happened at 0 outside the booking (a waiter that woke late): the
    # booking says go, the real release times say wait half a second.
    clock = SteppedClock()
    pacer = Pacer(rate=2.0)
    assert pacer.admit(0.0) == 0.0
    await pacer.acquire(clock)
    assert clock.sleeps == [0.5]
    assert pacer.released == 2


def test_each_429_in_a_new_round_is_counted() -> None:
    aimd = Aimd(10.0)
    assert aimd.throttled(sent_at=0.0, now=0.0)
    assert not aimd.throttled(sent_at=-1.0, now=0.5)  # sent before the cut: same round
    assert aimd.throttled(sent_at=1.0, now=1.0)
    assert aimd.decreases == 2


def test_a_bucket_keeps_the_declared_burst_and_recovery() -> None:
    bucket = Bucket.for_rate(Rate(10, 1.0, burst=3), recovery=4.0)
    assert bucket.pacer.burst == 3
    assert bucket.pacer.rate == pytest.approx(10 * SAFETY)
    assert [bucket.pacer.reserve(0.0) for _ in range(4)] == pytest.approx(
        [0.0, 0.0, 0.0, 1 / (10 * SAFETY)]
    )
    bucket.aimd.throttled(sent_at=0.0, now=0.0)
    assert bucket.aimd.rate(4.0) == pytest.approx(10 * SAFETY)  # back in 4 s, not 30


def test_the_gate_passes_its_recovery_and_rng_to_every_budget_and_the_outage() -> None:
    clock = SteppedClock(0.0)
    limits = Limits(requests=Rate(10, 1.0), endpoints={"status": Rate(4, 1.0)})
    gate = Gate("p", limits, pool_size=2, clock=clock, recovery=2.0, rng=FixedRandom(0.0))
    assert gate.provider == "p"
    gate.throttled("status", 0.0, 1.0)
    clock.t = 2.0
    assert gate.status_rate() == pytest.approx(4 * SAFETY)
    assert gate.requests is not None
    assert gate.requests.aimd.rate(2.0) == pytest.approx(10 * SAFETY)
    gate.outage.failed(0.0, "connect refused", probe=False)
    assert gate.outage.next_probe_at == 0.5  # uniform(c/2, c) drew its low end


def test_an_outage_ends_only_on_an_answer_below_500() -> None:
    outage = Outage()
    assert outage.next_probe_at == -math.inf  # the Lane may probe at once
    outage.heard(0.0, 200)
    outage.failed(1.0, "timeout", probe=False)
    assert outage.heard(2.0, 500) is None
    assert outage.down  # a 500 is no sign of health
    assert outage.heard(3.0, 404) == 2.0
    assert (outage.down, outage.failures, outage.next_probe_at) == (False, 0, -math.inf)


def test_the_probe_delay_doubles_and_is_jittered_between_half_and_whole() -> None:
    low = Outage(OutagePolicy(base=1.0, cap=60.0), FixedRandom(0.0))
    high = Outage(OutagePolicy(base=1.0, cap=60.0), FixedRandom(1.0))
    for outage in (low, high):
        outage.failed(0.0, "timeout", probe=False)
        outage.failed(0.0, "timeout", probe=True)
        outage.failed(0.0, "timeout", probe=True)
    assert (low.delay(), high.delay()) == (2.0, 4.0)  # third failure: c = 1 * 2**2


@pytest.mark.anyio
async def test_a_gate_without_a_listener_ends_an_outage_quietly() -> None:
    gate = Gate("p", Limits(), pool_size=1, clock=SteppedClock())
    gate.outage.failed(0.0, "timeout", probe=False)
    gate.heard(200)
    assert not gate.outage.down


def test_a_pause_is_announced_once_with_its_reason() -> None:
    clock = SteppedClock(0.0)
    gate = Gate("p", Limits(requests=Rate(10, 1.0)), pool_size=1, clock=clock)
    seen: list[tuple[float, str]] = []
    gate.on_pause = lambda seconds, reason: seen.append((seconds, reason))
    assert gate.pause(2.0) == 2.0
    assert gate.pause(2.0) == 2.0  # the same end: nothing new to announce
    gate.observe(RateLimitInfo(remaining=5, reset=30.0))  # quota left: no pause
    gate.observe(RateLimitInfo(remaining=0, reset=3.0))
    assert seen == [(2.0, "paused"), (3.0, "quota used up (rate-limit headers: remaining 0)")]
    assert gate.paused_until == 3.0
