"""Pacer, AIMD and Gate details on an injected clock, found unguarded by the mutation run
(make mutate): exact waits, the burst after a rate change, a lowered ceiling, a 429's pause.
"""

from __future__ import annotations

import pytest

from runner.http.limits import DEFAULT_PAUSE, MIN_FRACTION, SAFETY, Aimd, Gate, Pacer
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
