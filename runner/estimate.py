"""What a plan will cost: requests per provider (submits, polls, result pages) and the
shortest wall time its declared limits allow (docs/engineering.md#wall-time-estimate).

Pure arithmetic over the Plan; the rules per provider (requests per submit, poll and result,
a typical job duration) are its ProviderInfo's, and `assumptions()` prints them in words.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from runner.plan import JobSpec, Plan, PollPolicy, ProviderSettings
from runner.providers.registry import PROVIDERS

DEFAULT_DURATION = 60.0  # a provider the registry no longer knows (never in a valid plan)
MAX_POLLS = 10_000  # per job, guards the geometric sum against odd policies


def assumptions() -> tuple[str, ...]:
    """The estimate's assumptions in words: the general rules, then each provider's own
    (its `ProviderInfo.estimate_note`) and every typical duration."""
    notes = [info.estimate_note for info in PROVIDERS.values() if info.estimate_note]
    durations = ", ".join(
        f"{name} {int(info.typical_duration)}s" for name, info in PROVIDERS.items()
    )
    return (
        "at least 1 poll per job (the one that sees it finish); expected polls follow the poll "
        "policy for a job of typical duration",
        "a submit is 1 request and no result request is counted, unless a provider's rule "
        "below says otherwise; per-item content and file downloads are never counted",
        *notes,
        f"typical durations: {durations}",
    )


def submit_requests(job: JobSpec) -> int:
    """Requests one submit takes (the provider's `submit_requests` rule)."""
    return PROVIDERS[job.provider].submit_requests(job)


def result_requests(job: JobSpec) -> int:
    """Result requests at the least (the provider's `result_requests` rule)."""
    return PROVIDERS[job.provider].result_requests(job)


def poll_requests(provider: str, polls: int) -> int:
    """Status requests of `polls` polls (the provider's `poll_requests` rule)."""
    return PROVIDERS[provider].poll_requests(polls)


def expected_polls(policy: PollPolicy, duration: float) -> int:
    """Polls until the first one at or after `duration`: initial, then ×multiplier, capped."""
    elapsed, interval, polls = policy.initial, policy.initial, 1
    while elapsed < duration and polls < MAX_POLLS:
        interval = max(min(interval * policy.multiplier, policy.max), 1e-3)
        elapsed += interval
        polls += 1
    return polls


@dataclass(frozen=True, slots=True)
class ProviderEstimate:
    provider: str
    jobs: int
    submits: int
    polls_min: int
    polls_expected: int
    results: int
    typical_duration: float
    floor_seconds: float  # what the limits alone allow (jobs finish instantly)
    expected_seconds: float  # with the typical duration
    bound: str  # what sets expected_seconds: rate, submissions, in_flight

    @property
    def requests_min(self) -> int:
        return self.submits + self.polls_min + self.results

    @property
    def requests_expected(self) -> int:
        return self.submits + self.polls_expected + self.results

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "jobs": self.jobs,
            "submits": self.submits,
            "polls": {"min": self.polls_min, "expected": self.polls_expected},
            "result_requests": self.results,
            "requests": {"min": self.requests_min, "expected": self.requests_expected},
            "typical_duration_seconds": self.typical_duration,
            "shortest_seconds": {
                "limits_only": round(self.floor_seconds, 3),
                "expected": round(self.expected_seconds, 3),
            },
            "bound": self.bound,
        }


@dataclass(frozen=True, slots=True)
class PlanEstimate:
    providers: tuple[ProviderEstimate, ...]

    @property
    def floor_seconds(self) -> float:
        return max((p.floor_seconds for p in self.providers), default=0.0)

    @property
    def expected_seconds(self) -> float:
        return max((p.expected_seconds for p in self.providers), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "assumptions": list(assumptions()),
            "providers": [p.as_dict() for p in self.providers],
            "batch": {
                "requests": {
                    "min": sum(p.requests_min for p in self.providers),
                    "expected": sum(p.requests_expected for p in self.providers),
                },
                "shortest_seconds": {
                    "limits_only": round(self.floor_seconds, 3),
                    "expected": round(self.expected_seconds, 3),
                },
            },
        }


def _time_for(requests: int, per_second: float | None) -> float:
    return requests / per_second if per_second else 0.0


def estimate_provider(settings: ProviderSettings, jobs: Iterable[JobSpec]) -> ProviderEstimate:
    """One provider's requests and bounds: T = max(Q/R, n/R_submit + D, n·D/C)
    (docs/engineering.md#wall-time-estimate)."""
    info = PROVIDERS.get(settings.name)
    duration = info.typical_duration if info is not None else DEFAULT_DURATION
    count = submits = polls_expected = results = 0
    cache: dict[PollPolicy, int] = {}
    for job in jobs:
        count += 1
        submits += submit_requests(job)
        results += result_requests(job)
        if job.poll not in cache:
            cache[job.poll] = poll_requests(settings.name, expected_polls(job.poll, duration))
        polls_expected += cache[job.poll]
    limits = settings.limits
    overall = limits.requests.per_second if limits.requests else None
    split = {name: rate.per_second for name, rate in limits.endpoints.items()}

    def rate_bound(polls: int) -> float:
        total = submits + polls + results
        return max(
            _time_for(total, overall),
            _time_for(submits, split.get("submit")),
            _time_for(polls, split.get("status")),
            _time_for(results, split.get("results")),
        )

    submit_rates = [r for r in (overall, split.get("submit")) if r]
    submit_rate = min(submit_rates) if submit_rates else None
    # One submit per job; each takes `submits / count` requests of the submit budget.
    per_job = submits / count if count else 1.0
    submissions = _time_for(count, submit_rate / per_job if submit_rate else None)
    bounds = {
        "rate": rate_bound(polls_expected),
        "submissions": submissions + duration if count else 0.0,
        "in_flight": count * duration / limits.in_flight if limits.in_flight and count else 0.0,
    }
    bound = max(bounds, key=lambda name: bounds[name])
    return ProviderEstimate(
        provider=settings.name,
        jobs=count,
        submits=submits,
        polls_min=count,
        polls_expected=polls_expected,
        results=results,
        typical_duration=duration,
        floor_seconds=rate_bound(count),
        expected_seconds=bounds[bound],
        bound=bound,
    )


def estimate_plan(plan: Plan) -> PlanEstimate:
    by_provider: dict[str, list[JobSpec]] = {name: [] for name in plan.providers}
    for job in plan.jobs:
        by_provider.setdefault(job.provider, []).append(job)
    return PlanEstimate(
        tuple(
            estimate_provider(plan.providers[name], jobs)
            for name, jobs in by_provider.items()
            if name in plan.providers
        )
    )
