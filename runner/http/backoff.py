"""Pure timing decisions: poll intervals and retry delays. The RNG is passed in, never global.

Poll interval k (k = 0 is the first poll after submit) has the ceiling
`c_k = min(max, initial * multiplier**k)` and is drawn with *full jitter over one growth
step*: uniform on `[c_k / s, c_k]` with `s = max(multiplier, 1.25)`. Jitter spreads jobs
submitted in the same second across a whole step (the de-bunching that full jitter buys in
Brooker's analysis), but unlike `uniform(0, c_k)` it never re-polls a job a few
milliseconds after the last answer: in a rate-limited runner every poll that says "still
running" costs 1/R of the provider's budget (docs/engineering.md#poll-jitter). The ranges of
successive steps tile the time line, so the schedule still grows geometrically to `max`.

Retry delays (a failed request, not a poll) use Brooker's full jitter,
`uniform(0, min(cap, base * 2**attempt))`, unless the provider gave a hint, which wins
unclamped.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from runner.plan import PollPolicy

MIN_SPREAD = 1.25  # jitter range of a fixed (multiplier 1) schedule: [0.8 c, c]


def poll_ceiling(policy: PollPolicy, attempt: int) -> float:
    """The un-jittered interval before poll `attempt` (0-based)."""
    if policy.multiplier <= 1.0 or policy.initial >= policy.max:
        return min(policy.max, policy.initial)
    # Compare exponents first: a job polled thousands of times must not overflow a float.
    if attempt >= math.log(policy.max / policy.initial, policy.multiplier):
        return policy.max
    return min(policy.max, policy.initial * policy.multiplier**attempt)


def poll_delay(policy: PollPolicy, attempt: int, rng: random.Random) -> float:
    """The jittered interval before poll `attempt`: uniform on [c/s, c]."""
    ceiling = poll_ceiling(policy, attempt)
    low = ceiling / max(policy.multiplier, MIN_SPREAD)
    return low + rng.random() * (ceiling - low)


def budget_interval(in_flight: int, status_rate: float | None) -> float:
    """The shortest interval at which `in_flight` jobs can each poll inside `status_rate`."""
    if not status_rate or in_flight <= 0:
        return 0.0
    return in_flight / status_rate


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a safe-to-retry request is retried, and how long between tries."""

    attempts: int = 4  # tries in all, the first included
    base: float = 0.25  # seconds
    cap: float = 8.0  # ceiling of the jittered delay (a provider's own hint is not capped)


DEFAULT_RETRY = RetryPolicy()


def retry_delay(
    policy: RetryPolicy, attempt: int, rng: random.Random, hint: float | None = None
) -> float:
    """Delay before retry number `attempt` (1-based): the hint, else full jitter."""
    if hint is not None:
        return hint
    ceiling: float = min(policy.cap, policy.base * 2.0 ** max(0, attempt - 1))
    return rng.random() * ceiling
