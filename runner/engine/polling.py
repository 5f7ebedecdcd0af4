"""Where the next poll of a job goes: spend the status budget where it buys time.

Two regimes (docs/engineering.md#polling-policy):

- **Spare budget** (`Regime.SPARE`): nothing waits for the request budget: every job is
  submitted, or the submits wait for an in-flight slot. Then a slot freed sooner is a job
  started sooner, so the spare status budget goes into detecting completions sooner: each
  job in flight polls every `in_flight / (share x status rate)` seconds (the share: what
  submits and fetches leave), never more often than `FLOOR`, and never later than the
  manifest's policy would. A job does not poll before the
  earliest completion the batch has seen (a low quantile of its durations).
- **Requests bind** (`Regime.THRIFTY`): submits are waiting for the request budget, so every
  "still running" answer costs a submit's place. Polls go where completions are likely: with
  enough finished jobs, at equal-probability steps of the durations seen so far (the
  quantiles of the conditional distribution past the job's age), as many steps per job as
  the policy's first interval allows; a job that reports progress is polled near the time its
  progress extrapolates to. Until then, the policy's geometric schedule.

Everything here is pure: the time and the RNG are passed in.
"""

from __future__ import annotations

import bisect
import random
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from runner.http.backoff import budget_interval, poll_delay
from runner.plan import PollPolicy

FLOOR = 0.25  # seconds: no job is polled more often than this (unless its policy says so)
SHARE_SHARED = 0.5  # of a provider-wide budget polls may take (submits and fetches share it)
SHARE_OWN = 0.9  # of a status-only budget
MIN_POLLING = 0.1  # of the jobs in flight, counted as polling however young the rest are
SHARE_MIN = 0.3  # of a shared budget, however many submits and fetches it carries
OTHERS_PER_JOB = 2.0  # requests a job costs besides its polls: its submit and a result page
MIN_SAMPLES = 5  # finished jobs before their durations steer the polls
MAX_SAMPLES = 4096  # durations kept (the latest replace the oldest beyond that)
EARLY_QUANTILE = 0.02  # in the spare regime no job polls before this quantile of durations
MAX_STEPS = 20  # quantile steps per job at most (thrifty regime)
PROGRESS_MIN = 0.05  # progress below this extrapolates too wildly to trust


class Regime(StrEnum):
    SPARE = "spare"  # in-flight slots (or nothing) bind: poll often inside the budget
    THRIFTY = "thrifty"  # the request budget binds: poll where completions are likely


@dataclass(slots=True)
class Durations:
    """Completed durations seen in this batch, kept sorted (an empirical distribution)."""

    values: list[float] = field(default_factory=list)
    _order: deque[float] = field(default_factory=deque)  # arrival order, to drop the oldest
    _total: float = 0.0  # sum of `values`: the mean is asked at every poll

    def add(self, seconds: float) -> None:
        if len(self._order) >= MAX_SAMPLES:
            oldest = self._order.popleft()
            del self.values[bisect.bisect_left(self.values, oldest)]
            self._total -= oldest
        self._order.append(seconds)
        bisect.insort(self.values, seconds)
        self._total += seconds

    def __len__(self) -> int:
        return len(self.values)

    def cdf(self, seconds: float) -> float:
        """Share of durations at most `seconds`."""
        return bisect.bisect_right(self.values, seconds) / len(self.values)

    def quantile(self, q: float) -> float:
        values = self.values
        index = min(len(values) - 1, max(0, int(q * len(values))))
        return values[index]

    def mean(self) -> float:
        return self._total / len(self.values)


@dataclass(frozen=True, slots=True)
class Budget:
    """What the provider allows polls right now."""

    in_flight: int  # remote jobs being polled
    status_rate: float | None  # requests per second polls may use (None: no budget known)
    own: bool = False  # a status-only budget (else shared with submits and fetches)

    def share(self, durations: Durations) -> float:
        """The part of the budget polls may take. A status-only budget: SHARE_OWN. One
        shared with submits and fetches: what those leave, about OTHERS_PER_JOB requests per
        job ended (in_flight / mean duration per second), once durations are known; until
        then SHARE_SHARED."""
        if self.own:
            return SHARE_OWN
        if not self.status_rate or len(durations) < MIN_SAMPLES:
            return SHARE_SHARED
        others = OTHERS_PER_JOB * self.in_flight / max(durations.mean(), FLOOR)
        return min(SHARE_OWN, max(SHARE_MIN, SHARE_OWN - others / self.status_rate))

    def polling(self, durations: Durations) -> int:
        """The jobs in flight that poll. Those younger than the earliest completion seen do
        not (`spare_delay`): by Little's law about q / mean of them (q: that quantile)."""
        if len(durations) < MIN_SAMPLES:
            return self.in_flight
        young = durations.quantile(EARLY_QUANTILE) / max(durations.mean(), FLOOR)
        return max(1, round(self.in_flight * max(MIN_POLLING, 1.0 - young)))

    def interval(self, durations: Durations) -> float:
        """The shortest interval at which every job that polls does so inside its share."""
        if not self.status_rate:
            return 0.0
        rate = self.status_rate * self.share(durations)
        return budget_interval(self.polling(durations), rate)


def spare_delay(
    policy: PollPolicy,
    attempt: int,
    age: float,
    budget: Budget,
    rng: random.Random,
    durations: Durations,
) -> float:
    """Spare budget: poll as often as the budget share allows (not below FLOOR), but no
    later than the policy's own interval, and not before the earliest likely completion."""
    planned = poll_delay(policy, attempt, rng)
    if not budget.status_rate:
        return planned
    delay = min(planned, max(_floor(policy), budget.interval(durations)))
    if len(durations) >= MIN_SAMPLES:
        delay = max(delay, durations.quantile(EARLY_QUANTILE) - age)
    # all jobs that poll, polling at this pace, still fit the whole budget
    return max(delay, budget_interval(budget.polling(durations), budget.status_rate))


def thrifty_delay(
    policy: PollPolicy,
    attempt: int,
    age: float,
    budget: Budget,
    rng: random.Random,
    durations: Durations,
    progress: float | None = None,
) -> float:
    """Requests bind: the next likely completion, at least the budget's interval apart, and
    never further than the policy's longest interval."""
    stretch = budget_interval(budget.in_flight, budget.status_rate)
    guess = _from_progress(age, progress)
    if guess is None and len(durations) >= MIN_SAMPLES:
        guess = _next_quantile(policy, age, durations)
    if guess is None:
        guess = poll_delay(policy, attempt, rng)
    return max(_floor(policy), min(guess, policy.max), stretch)


def _floor(policy: PollPolicy) -> float:
    """The shortest interval: FLOOR, or the policy's own first interval when that is
    shorter (a manifest asking for 50 ms polls gets them, budget permitting)."""
    return min(FLOOR, policy.initial)


def _from_progress(age: float, progress: float | None) -> float | None:
    """A job `progress` done after `age` seconds ends, at that pace, in age x (1/p - 1)."""
    if progress is None or not PROGRESS_MIN <= progress < 1.0 or age <= 0:
        return None
    return age * (1.0 / progress - 1.0)


def _next_quantile(policy: PollPolicy, age: float, durations: Durations) -> float | None:
    """Seconds to the next equal-probability step of the durations past `age`; None when
    the job is older than every duration seen (then the policy's schedule goes on)."""
    steps = min(MAX_STEPS, max(1, round(durations.mean() / max(policy.initial, FLOOR))))
    reached = durations.cdf(age)
    if reached >= 1.0:
        return None
    target = min(1.0, reached + 1.0 / steps)
    return max(0.0, durations.quantile(target - 1e-9) - age)


@dataclass(slots=True)
class Tracker:
    """One provider's jobs in flight: when each was submitted and last polled, and the
    durations of those that finished (a lane holds one)."""

    durations: Durations = field(default_factory=Durations)
    started: dict[str, float] = field(default_factory=dict)  # job id → submit (monotonic)
    last_poll: dict[str, float] = field(default_factory=dict)  # job id → last poll sent

    def submitted(self, job_id: str, now: float) -> None:
        self.started[job_id] = now
        self.last_poll.pop(job_id, None)

    def polled(self, job_id: str, sent: float) -> None:
        self.last_poll[job_id] = sent

    def age(self, job_id: str, now: float) -> float:
        return now - self.started.setdefault(job_id, now)  # resumed: counted from now

    def finished(self, job_id: str, now: float) -> None:
        """The job was seen finished at `now`: it ended between its last poll and now (the
        middle is the estimate)."""
        start = self.started.pop(job_id, None)
        before = self.last_poll.pop(job_id, None)
        if start is None:
            return
        ended = now if before is None or before < start else (before + now) / 2
        self.durations.add(max(0.0, ended - start))

    def forget(self, job_id: str) -> None:
        self.started.pop(job_id, None)
        self.last_poll.pop(job_id, None)

    def delay(
        self,
        job_id: str,
        policy: PollPolicy,
        attempt: int,
        now: float,
        regime: Regime,
        budget: Budget,
        rng: random.Random,
        progress: float | None = None,
    ) -> float:
        age = self.age(job_id, now)
        if regime is Regime.SPARE:
            return spare_delay(policy, attempt, age, budget, rng, self.durations)
        return thrifty_delay(policy, attempt, age, budget, rng, self.durations, progress)


def regime(
    *,
    submits_waiting: bool,
    free_slots: int | None,
    status_rate: float | None,
    first_interval: float,
) -> Regime:
    """Requests bind when submits wait and the free in-flight slots (None: no cap) take
    longer than a first poll interval to fill at the budget's rate; else the budget is spare
    (every job is out, or the submits wait for slots)."""
    if not submits_waiting:
        return Regime.SPARE
    if free_slots is None or not status_rate:
        return Regime.THRIFTY
    return Regime.THRIFTY if free_slots / status_rate > first_interval else Regime.SPARE
