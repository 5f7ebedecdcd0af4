"""Sliding-window request limits (what the sandbox enforces) and window peak counters (books).

Both take `now` from the caller (a monotonic clock), so tests can drive them with fake time.
"""

from __future__ import annotations

import math
from collections import deque


class SlidingWindow:
    """At most `requests` accepted in any window of `per` seconds (half-open: (now-per, now])."""

    __slots__ = ("_times", "per", "requests")

    def __init__(self, requests: int, per: float) -> None:
        self.requests = requests
        self.per = per
        self._times: deque[float] = deque()

    def _trim(self, now: float) -> None:
        times, cutoff = self._times, now - self.per
        while times and times[0] <= cutoff:
            times.popleft()

    def acquire(self, now: float) -> float | None:
        """Record and allow a request (None), or refuse it: seconds until a slot frees."""
        self._trim(now)
        if len(self._times) >= self.requests:
            return max(self._times[0] + self.per - now, 0.0)
        self._times.append(now)
        return None

    def remaining(self, now: float) -> int:
        self._trim(now)
        return max(self.requests - len(self._times), 0)

    def reset_in(self, now: float) -> float:
        """Seconds until the oldest request in the window leaves it (0 when empty)."""
        self._trim(now)
        return max(self._times[0] + self.per - now, 0.0) if self._times else 0.0


def retry_after_header(seconds: float) -> str:
    """Retry-After as whole seconds, rounded up (never 0 for a refusal)."""
    return str(max(1, math.ceil(seconds)))


class WindowPeak:
    """The highest number of events seen in any window of `per` seconds."""

    __slots__ = ("_times", "peak", "per")

    def __init__(self, per: float) -> None:
        self.per = per
        self.peak = 0
        self._times: deque[float] = deque()

    def add(self, now: float) -> None:
        # The busiest window can always be slid to end at an event, so checking at each
        # arrival finds the maximum over all windows.
        times, cutoff = self._times, now - self.per
        while times and times[0] <= cutoff:
            times.popleft()
        times.append(now)
        if len(times) > self.peak:
            self.peak = len(times)
