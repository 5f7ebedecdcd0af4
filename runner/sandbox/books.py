"""The sandbox's books: what each provider's API received, served `GET /_sandbox/stats`.

Every request a provider API receives is counted (401s and 429s included); out-of-band file
downloads are counted apart in `downloads`. Injected faults on submits are booked per body:
`submits_lost` never created a job, `submits_unanswered` created one and got no good answer.
`POST /_sandbox/reset` clears the books only.
"""

from __future__ import annotations

from typing import Any

from runner.sandbox.limits import WindowPeak
from runner.sandbox.scenario import RateLimit

# Without a configured limit, the peak is reported over 1-second windows.
DEFAULT_WINDOW = 1.0


class ProviderBooks:
    __slots__ = (
        "busy",
        "downloads",
        "dropped",
        "dropped_after_accept",
        "endpoint_peaks",
        "endpoint_throttled",
        "errors_after_accept",
        "errors_injected",
        "keyed_downloads",
        "limit",
        "peak",
        "refused_credits",
        "requests",
        "submits",
        "submits_lost",
        "submits_unanswered",
        "throttled",
    )

    def __init__(self, limit: RateLimit | None) -> None:
        self.limit = limit
        self.requests: dict[str, int] = {}
        self.throttled = 0
        self.busy = 0  # submits refused by the hidden in-flight cap (scenario hidden_in_flight)
        self.peak = WindowPeak(limit.per if limit else DEFAULT_WINDOW)
        self.submits: dict[str, int] = {}
        self.downloads = 0
        self.keyed_downloads = 0  # out-of-band file requests that carried a credential
        self.errors_injected = 0
        self.errors_after_accept = 0  # of errors_injected: answered after the handler ran
        self.dropped = 0
        self.dropped_after_accept = 0  # of dropped: closed after the handler ran
        self.submits_lost: dict[str, int] = {}  # body key → faulted before a job existed
        self.submits_unanswered: dict[str, int] = {}  # body key → created, then faulted
        self.endpoint_peaks: dict[str, tuple[RateLimit, WindowPeak]] = {}
        self.endpoint_throttled: dict[str, int] = {}
        self.refused_credits = 0  # submits answered "no credits" (the `credits` knob)

    def record(self, label: str, now: float) -> None:
        self.requests[label] = self.requests.get(label, 0) + 1
        self.peak.add(now)

    def record_endpoint(self, group: str, limit: RateLimit, now: float) -> None:
        entry = self.endpoint_peaks.get(group)
        if entry is None:
            entry = self.endpoint_peaks[group] = (limit, WindowPeak(limit.per))
        entry[1].add(now)

    def record_submit(self, key: str) -> None:
        self.submits[key] = self.submits.get(key, 0) + 1

    def record_fault(self, key: str | None, *, created: bool) -> None:
        """A submit (body `key`) whose answer was an injected fault; `created`: its job
        exists (the fault came after the handler accepted it)."""
        if key is None:
            return
        book = self.submits_unanswered if created else self.submits_lost
        book[key] = book.get(key, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "requests": dict(sorted(self.requests.items())),
            "throttled": self.throttled,
            "busy": self.busy,
            "limit": (
                {"requests": self.limit.requests, "per_seconds": self.limit.per}
                if self.limit
                else None
            ),
            "max_window_requests": self.peak.peak,
            "window_seconds": self.peak.per,
            "submits": dict(sorted(self.submits.items())),
            "downloads": self.downloads,
            "keyed_downloads": self.keyed_downloads,
            "errors_injected": self.errors_injected,
            "errors_after_accept": self.errors_after_accept,
            "dropped": self.dropped,
            "dropped_after_accept": self.dropped_after_accept,
            "submits_lost": dict(sorted(self.submits_lost.items())),
            "submits_unanswered": dict(sorted(self.submits_unanswered.items())),
            "refused_credits": self.refused_credits,
        }
        if self.endpoint_peaks:
            data["endpoints"] = {
                group: {
                    "limit": {"requests": limit.requests, "per_seconds": limit.per},
                    "max_window_requests": peak.peak,
                    "throttled": self.endpoint_throttled.get(group, 0),
                }
                for group, (limit, peak) in sorted(self.endpoint_peaks.items())
            }
        return data


class Books:
    """One ProviderBooks per provider; `reset` starts every counter afresh."""

    def __init__(self, limits: dict[str, RateLimit | None]) -> None:
        self._limits = limits
        self.providers: dict[str, ProviderBooks] = {}
        self.reset()

    def reset(self) -> None:
        self.providers = {name: ProviderBooks(limit) for name, limit in self._limits.items()}

    def snapshot(self) -> dict[str, Any]:
        return {"providers": {name: b.snapshot() for name, b in self.providers.items()}}
