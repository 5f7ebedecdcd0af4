"""Per-provider request limits: a GCRA pacer, AIMD after 429s, the outage state, and the
Gate that combines them.

A request takes its in-flight slot first and is paced last, right before it is sent
(docs/engineering.md#gcra-pacing, docs/engineering.md#slot-first-pace-last): a delay after the pacer
would turn into a burst. The pacer checks real release times too (the stall guard), so an event-loop
stall never releases overdue requests back to back. Only `Clock.sleep` waits; the decisions are
pure.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import anyio

from runner.http.ratelimit_headers import RateLimitInfo
from runner.plan import EndpointClass, Limits, Rate

# Pace at this fraction of the declared rate: a provider counting a sliding window of
# `per` seconds then sees N requests spread over per/0.95, leaving 5 % of the window for
# network jitter (docs/engineering.md#gcra-pacing recommends 0.95-0.98 R).
SAFETY = 0.95
# After a 429 the rate halves (at most once per round of requests in flight) and climbs
# back linearly to the ceiling over this many seconds.
DECREASE = 0.5
RECOVERY_SECONDS = 30.0
MIN_FRACTION = 1 / 64  # the rate never drops below this fraction of its ceiling
DEFAULT_PAUSE = 1.0  # a 429 without any hint pauses the provider this long
# Learned limits (no published number): how fast a guessed rate climbs, how far, and where
# it settles below the rate that earned the first 429; the largest in-flight cap learned.
LEARN_SECONDS = 10.0  # the rate grows by its starting guess every this many seconds
LEARN_HEADROOM = 16.0  # ... up to this multiple of the guess
LEARN_BACKOFF = 0.9
LEARN_MAX_IN_FLIGHT = 10_000
PROBE_ROUNDS = 4  # after a concurrency error, the cap grows by one per this many rounds


class Clock(Protocol):
    """Monotonic seconds and the one way to wait; tests inject a fake."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class AnyioClock:
    """The event loop's monotonic clock."""

    def now(self) -> float:
        return anyio.current_time()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class Pacer:
    """GCRA ("virtual scheduling") pacer: at most `burst` back to back, then one per 1/rate.

    `reserve` books the next slot in FIFO order before the caller waits; `admit` is the stall
    guard: it checks the *real* release time against a second GCRA state and the pause, so
    releases conform to (rate, burst) however late the waiters wake.
    """

    __slots__ = ("_atat", "_interval", "_tat", "_tau", "burst", "paused_until", "released")

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a pacer needs rate > 0 and burst >= 1")
        self.burst = burst
        self._interval = 1.0 / rate
        self._tau = (burst - 1) * self._interval
        self._tat = -math.inf  # theoretical arrival time of the next reservation
        self._atat = -math.inf  # the same for actual releases (stall guard)
        self.paused_until = -math.inf
        self.released = 0

    @property
    def rate(self) -> float:
        return 1.0 / self._interval

    def set_rate(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._tau = (self.burst - 1) * self._interval

    def reserve(self, now: float) -> float:
        """Book a slot; seconds to wait before trying `admit`."""
        start = max(now, self._tat - self._tau, self.paused_until)
        self._tat = max(self._tat, now, self.paused_until) + self._interval
        return start - now

    def admit(self, now: float) -> float:
        """0.0 and the release is recorded, or the seconds to wait before asking again."""
        earliest = max(self.paused_until, self._atat - self._tau)
        if now < earliest:
            return earliest - now
        self._atat = max(self._atat, now) + self._interval
        self.released += 1
        return 0.0

    def pause(self, until: float) -> None:
        """Release nothing before `until`; later reservations queue behind it."""
        self.paused_until = max(self.paused_until, until)

    async def acquire(self, clock: Clock) -> None:
        wait = self.reserve(clock.now())
        while True:
            if wait > 0:
                await clock.sleep(wait)
            wait = self.admit(clock.now())
            if wait <= 0:
                return


class Aimd:
    """Additive-increase, multiplicative-decrease rate: halves on a 429, then recovers.

    A decrease happens at most once per round: a 429 for a request sent before the last
    decrease says nothing new (the requests in flight together all see the same limit).

    A declared or published rate is the ceiling, never exceeded. A `learn`ed one (the
    provider publishes no number) starts at the guess and climbs by the guess every
    `LEARN_SECONDS` up to `LEARN_HEADROOM` times it, like TCP's window; the first 429 says
    where the provider's limit is: the ceiling becomes `LEARN_BACKOFF` of the rate that
    earned it, and the rate recovers to that as a declared one would.
    """

    __slots__ = (
        "_base",
        "_since",
        "_slope",
        "ceiling",
        "decreases",
        "floor",
        "learning",
        "recovery",
    )

    def __init__(
        self, ceiling: float, recovery: float = RECOVERY_SECONDS, *, learn: bool = False
    ) -> None:
        self.ceiling = ceiling * LEARN_HEADROOM if learn else ceiling
        self.floor = ceiling * MIN_FRACTION
        self.recovery = recovery
        self.learning = learn  # still climbing: no 429 has told where the limit is
        self._slope = ceiling / LEARN_SECONDS if learn else ceiling / recovery
        self._base = ceiling
        self._since = math.nan if learn else -math.inf  # nan: the climb starts at first use
        self.decreases = 0

    def rate(self, now: float) -> float:
        if self._since != self._since:  # nan: first use
            self._since = now
        grown = self._base + (now - self._since) * self._slope
        return min(self.ceiling, grown)

    def throttled(self, sent_at: float, now: float) -> bool:
        """Record a 429 for a request sent at `sent_at`; True if the rate was cut."""
        if sent_at < self._since:
            return False
        current = self.rate(now)
        if self.learning:
            self.learning = False
            self.ceiling = max(self.floor, current * LEARN_BACKOFF)
            self._slope = self.ceiling / self.recovery
        self._base = max(self.floor, current * DECREASE)
        self._since = now
        self.decreases += 1
        return True

    def lower_ceiling(self, rate: float) -> None:
        """The provider told us its real policy (RateLimit-Policy): never aim above it."""
        if rate < self.ceiling:
            self.ceiling = rate
            self.floor = rate * MIN_FRACTION
            self._base = min(self._base, rate)
            if self.learning:  # no guessing beyond a number the provider gave
                self.learning = False
                self._slope = rate / self.recovery
                if self._since != self._since:  # not used yet: the number holds at once
                    self._since = -math.inf


class Concurrency:
    """The in-flight cap. A declared or published cap is kept (a provider's pending-job
    error may still lower it to what it accepts). A learned one starts at the guess and, like
    TCP's window, grows while submits are accepted with the cap full: by one per accepted
    submit (slow start) until the provider's first concurrency or slot error, then by one per
    PROBE_ROUNDS rounds of jobs (a quota shared with others may grow again; each probe above
    it costs one refused request); each such error sets it to the jobs the provider holds."""

    __slots__ = ("_cap", "learn", "lowered", "slow_start")

    def __init__(self, cap: int, *, learn: bool = False) -> None:
        self._cap = float(cap)
        self.learn = learn
        self.slow_start = learn
        self.lowered = 0

    @property
    def cap(self) -> int:
        return int(self._cap + 1e-9)  # 1/cap added cap times makes one, whatever the float

    def accepted(self, in_flight: int) -> None:
        """A submit was accepted; `in_flight` counts it."""
        if not self.learn or in_flight < self.cap:
            return  # the cap did not bind: nothing learned
        step = 1.0 if self.slow_start else 1 / (self.cap * PROBE_ROUNDS)
        self._cap = min(LEARN_MAX_IN_FLIGHT, self._cap + step)

    def refused(self, in_flight: int) -> None:
        """The provider refused a job for its concurrency: it holds `in_flight` now."""
        self._cap = float(max(1, in_flight))
        self.slow_start = False
        self.lowered += 1


@dataclass(slots=True)
class Bucket:
    """One request budget: a pacer driven by an AIMD rate (declared rate x SAFETY at most)."""

    pacer: Pacer
    aimd: Aimd

    @classmethod
    def for_rate(
        cls, rate: Rate, recovery: float = RECOVERY_SECONDS, *, learn: bool = False
    ) -> Bucket:
        ceiling = rate.per_second * SAFETY
        return cls(Pacer(ceiling, rate.burst), Aimd(ceiling, recovery, learn=learn))

    async def acquire(self, clock: Clock) -> None:
        self.pacer.set_rate(self.aimd.rate(clock.now()))
        await self.pacer.acquire(clock)


@dataclass(frozen=True, slots=True)
class OutagePolicy:
    """How an unreachable provider is probed: the k-th probe after a failure comes after
    uniform(c/2, c) seconds, c = min(cap, base * 2**(k-1)); a provider that never answered
    in this process is given up after `first_contact_tries` failed tries."""

    base: float = 1.0
    cap: float = 60.0
    first_contact_tries: int = 3


class Change(StrEnum):
    """What a failure did to the provider's standing (`Outage.failed`)."""

    NONE = "none"  # already known down; a request sent before it was known says nothing new
    OUTAGE = "outage"  # it answered before and does not now: an outage starts
    PROBE_LATER = "probe_later"  # a probe failed, or it never answered yet: probe later
    GIVE_UP = "give_up"  # it never answered at all: a wrong base URL, or no network


class Outage:
    """Whether a provider answers. Up; or down since `down_since`, with one probe allowed
    at `next_probe_at` (the Lane picks it); any HTTP answer below 500 ends it. Pure: the
    caller passes the time in."""

    __slots__ = ("answered", "down_since", "failures", "next_probe_at", "policy", "reason", "rng")

    def __init__(self, policy: OutagePolicy | None = None, rng: random.Random | None = None):
        self.policy = policy or OutagePolicy()
        self.rng = rng or random.Random()
        self.answered = False  # any HTTP answer from it in this process
        self.down_since: float | None = None
        self.next_probe_at = -math.inf
        self.failures = 0  # failed tries since down_since
        self.reason = ""

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, now: float, reason: str, *, probe: bool) -> Change:
        """A request got no usable answer (`probe`: it was the one probe allowed)."""
        if self.down_since is None:
            self.down_since, self.failures = now, 1
        elif probe:
            self.failures += 1
        else:
            return Change.NONE
        self.reason = reason
        self.next_probe_at = now + self.delay()
        if not self.answered and self.failures >= self.policy.first_contact_tries:
            return Change.GIVE_UP
        return Change.OUTAGE if self.answered and self.failures == 1 else Change.PROBE_LATER

    def heard(self, now: float, status: int) -> float | None:
        """An HTTP answer. Below 500 it ends an outage: returns how long it lasted."""
        self.answered = True
        if status >= 500 or self.down_since is None:
            return None
        lasted = now - self.down_since
        self.down_since, self.failures, self.next_probe_at = None, 0, -math.inf
        return lasted

    def delay(self) -> float:
        """Seconds to the next probe after `failures` failed tries (jittered)."""
        policy = self.policy
        exponent = min(self.failures - 1, 62)  # 2**62 s is past any cap
        ceiling = min(policy.cap, policy.base * 2.0**exponent)
        return ceiling / 2 + self.rng.random() * ceiling / 2


class SharedLimits(Protocol):
    """What a Gate hands to a budget shared by several processes (runner/http/shared_budget.py):
    the pacing of each request, its provider-wide pauses, its remote-jobs cap."""

    async def acquire(self, endpoint: EndpointClass) -> None: ...

    def pause(self, seconds: float) -> None: ...

    def may_submit(self, jobs_in_flight: int) -> bool: ...


class Gate:
    """Everything that limits one provider: request slots, budgets, pause, remote-job cap.

    `request(endpoint)` is the only way a request is sent; the engine asks
    `can_submit()` before starting a remote job and keeps `jobs_in_flight` up to date.
    """

    def __init__(
        self,
        provider: str,
        limits: Limits,
        *,
        pool_size: int,
        clock: Clock | None = None,
        recovery: float = RECOVERY_SECONDS,
        outage: OutagePolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.provider = provider
        self.clock: Clock = clock or AnyioClock()
        self.pool_size = pool_size
        self.limits = limits
        learned = limits.origin_of
        self.requests = (
            Bucket.for_rate(limits.requests, recovery, learn=learned("requests") == "learned")
            if limits.requests
            else None
        )
        self.endpoints: dict[EndpointClass, Bucket] = {
            name: Bucket.for_rate(rate, recovery, learn=learned(name) == "learned")
            for name, rate in limits.endpoints.items()
        }
        self._slots = anyio.Semaphore(pool_size, fast_acquire=True)
        self.concurrency = (
            None
            if limits.in_flight is None
            else Concurrency(limits.in_flight, learn=learned("in_flight") == "learned")
        )
        self.jobs_in_flight = 0
        self.paused_until = -math.inf
        self.sent = 0
        self.throttles = 0
        self.stopped: str | None = None  # set when the provider refused our key: send nothing
        # Told of every new provider-wide pause (seconds, reason): the log's provider.paused.
        self.on_pause: Callable[[float, str], None] | None = None
        self.outage = Outage(outage, rng)
        # Told when an outage ends (seconds it lasted): the engine's provider.reachable.
        self.on_reachable: Callable[[float], None] | None = None
        # Set when the budgets are shared across processes: it paces instead of the buckets.
        self.shared: SharedLimits | None = None

    def _buckets(self, endpoint: EndpointClass) -> list[Bucket]:
        found = [self.endpoints[endpoint]] if endpoint in self.endpoints else []
        if self.requests is not None:
            found.append(self.requests)  # the provider-wide budget is paced last
        return found

    @asynccontextmanager
    async def request(self, endpoint: EndpointClass) -> AsyncIterator[float]:
        """Hold a request slot, wait for every budget, yield the (monotonic) send time."""
        async with self._slots:
            if self.shared is not None:
                await self.shared.acquire(endpoint)
            buckets = self._buckets(endpoint) if self.shared is None else []
            for bucket in buckets:
                await bucket.acquire(self.clock)
            if not buckets:  # no budget declared: the pause still holds
                while (wait := self.paused_until - self.clock.now()) > 0:
                    await self.clock.sleep(wait)
            self.sent += 1
            yield self.clock.now()

    def heard(self, status: int) -> None:
        """Any HTTP answer: the provider is reachable (an outage ends below 500)."""
        lasted = self.outage.heard(self.clock.now(), status)
        if lasted is not None and self.on_reachable is not None:
            self.on_reachable(lasted)

    def pause(self, seconds: float, reason: str = "paused") -> float:
        """Pause every request to this provider for `seconds`; returns the unpause time."""
        now = self.clock.now()
        until = now + seconds
        extends = until > self.paused_until
        self.paused_until = max(self.paused_until, until)
        for bucket in self._all_buckets():
            bucket.pacer.pause(until)
        if extends and self.on_pause is not None:
            self.on_pause(seconds, reason)
        if self.shared is not None:
            self.shared.pause(seconds)
        return self.paused_until

    def throttled(
        self,
        endpoint: EndpointClass,
        sent_at: float,
        wait: float | None,
        reason: str = "throttled",
    ) -> None:
        """A 429 (or 503 with a hint): pause the whole provider and cut its rate."""
        self.throttles += 1
        now = self.clock.now()
        for bucket in self._buckets(endpoint):
            bucket.aimd.throttled(sent_at, now)
        self.pause(DEFAULT_PAUSE if wait is None else wait, reason)

    def observe(self, info: RateLimitInfo | None) -> None:
        """Feed the quota headers of any reply: learn the policy, pause on an empty quota."""
        if info is None:
            return
        policy = info.policy_rate
        if policy is not None:
            for bucket in self._all_buckets():
                bucket.aimd.lower_ceiling(policy * SAFETY)
        if info.remaining == 0 and info.reset:
            self.pause(info.reset, "quota used up (rate-limit headers: remaining 0)")

    def _all_buckets(self) -> list[Bucket]:
        found = list(self.endpoints.values())
        if self.requests is not None:
            found.append(self.requests)
        return found

    # -- remote jobs in flight ------------------------------------------------------------

    @property
    def in_flight_cap(self) -> int | None:
        return None if self.concurrency is None else self.concurrency.cap

    def can_submit(self) -> bool:
        if self.shared is not None and not self.shared.may_submit(self.jobs_in_flight):
            return False
        return self.concurrency is None or self.jobs_in_flight < self.concurrency.cap

    def accepted(self) -> None:
        """A submit was accepted (it counts in `jobs_in_flight` already)."""
        if self.concurrency is not None:
            self.concurrency.accepted(self.jobs_in_flight)

    def too_many(self) -> None:
        """The provider refused a submit for its concurrency or slots: the cap becomes the
        jobs it holds now."""
        if self.concurrency is None:
            self.concurrency = Concurrency(max(1, self.jobs_in_flight))
        self.concurrency.refused(self.jobs_in_flight)

    def status_own(self) -> bool:
        """Polls have a budget of their own (not shared with submits and fetches)."""
        return "status" in self.endpoints

    def report(self) -> dict[str, dict[str, Any]]:
        """Each limit: where it came from and, now, its value (rates in requests per
        second, as paced); learned ones say whether they are still climbing."""
        now = self.clock.now()
        found: dict[str, dict[str, Any]] = {}
        named = [("requests", self.requests), *self.endpoints.items()]
        for name, bucket in named:
            if bucket is None:
                continue
            entry: dict[str, Any] = {
                "origin": self.limits.origin_of(name),
                "rate_per_second": round(bucket.aimd.rate(now), 4),
                "throttled": bucket.aimd.decreases,
            }
            if self.limits.origin_of(name) == "learned":
                entry["found"] = not bucket.aimd.learning
            found[name] = entry
        if self.concurrency is not None:
            found["in_flight"] = {
                "origin": self.limits.origin_of("in_flight"),
                "cap": self.concurrency.cap,
                "lowered": self.concurrency.lowered,
            }
        return found

    def status_rate(self) -> float | None:
        """Requests per second polls may use (the status budget, else the provider's)."""
        now = self.clock.now()
        bucket = self.endpoints.get("status") or self.requests
        return None if bucket is None else bucket.aimd.rate(now)


def pool_size_for(limits: Limits, *, latency: float = 0.25, low: int = 4, high: int = 16) -> int:
    """Connections needed ≈ rate x request latency (Little's law), kept small
    (docs/engineering.md#pool-size-and-keep-alive)."""
    rate = limits.requests.per_second if limits.requests else None
    if rate is None:
        return high
    if limits.origin_of("requests") == "learned":
        rate *= LEARN_HEADROOM  # sized for where the learned rate may climb
    return max(low, min(high, math.ceil(rate * latency)))
