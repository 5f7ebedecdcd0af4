"""The ideal a scenario's limits allow, computed from the durations the sandbox drew.

A batch on one provider (a lane) cannot end before (1) the requests it must make at the
least, spent at each limit's rate, nor before (2) a clairvoyant schedule that knows every
duration: longest job first, into the first free in-flight slot, submits paced at the
submit rate, and no time lost detecting a completion. Providers run side by side, so a
scenario's ideal is its slowest lane's. Pure functions: tests/bench/test_ideal.py.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from runner.plan import JobSpec, Limits
from runner.providers.base import ProviderInfo


@dataclass(frozen=True, slots=True)
class Lane:
    """One provider's share of a batch, with the limits the provider really enforces."""

    durations: Sequence[float]  # wall seconds each job runs on the provider's side
    in_flight: int | None  # jobs unfinished at once, at most (None: no cap)
    budgets: Sequence[tuple[float, float]] = ()  # (requests needed, requests per second)
    submit_interval: float = 0.0  # seconds between two submits at the submit rate
    notes: tuple[str, ...] = field(default=())


def schedule_bound(durations: Sequence[float], in_flight: int | None, interval: float) -> float:
    """Makespan of the clairvoyant list schedule: longest first, earliest free slot, the
    i-th submit no earlier than i x interval."""
    slots: list[float] = []  # end times of the jobs holding a slot (a heap)
    end = 0.0
    for i, duration in enumerate(sorted(durations, reverse=True)):
        start = i * interval
        if in_flight is not None and len(slots) >= in_flight:
            start = max(start, heapq.heappop(slots))
        finish = start + duration
        heapq.heappush(slots, finish)
        end = max(end, finish)
    return end


def rate_bound(budgets: Iterable[tuple[float, float]]) -> float:
    """The longest time any limit needs for the requests that must pass it."""
    return max((needed / per_second for needed, per_second in budgets), default=0.0)


def lane_ideal(lane: Lane) -> float:
    return max(
        schedule_bound(lane.durations, lane.in_flight, lane.submit_interval),
        rate_bound(lane.budgets),
    )


def scenario_ideal(lanes: Iterable[Lane]) -> float:
    return max((lane_ideal(lane) for lane in lanes), default=0.0)


def minimum_requests(info: ProviderInfo, job: JobSpec) -> tuple[int, int, int]:
    """(submit, status, results) requests a job needs at the least: its submit, one poll
    after it completed, and its result pages, by the provider's own estimate rules."""
    return info.submit_requests(job), info.poll_requests(1), info.result_requests(job)


def lane_for(
    info: ProviderInfo, jobs: Sequence[JobSpec], durations: Sequence[float], limits: Limits
) -> Lane:
    """The lane of `jobs` on a provider enforcing `limits` (rates in wall seconds)."""
    need = [minimum_requests(info, job) for job in jobs]
    submits = sum(n[0] for n in need)
    total = sum(sum(n) for n in need)
    budgets: list[tuple[float, float]] = []
    interval = 0.0
    per_job_submit = submits / len(jobs) if jobs else 0.0
    if limits.requests is not None:
        budgets.append((total, limits.requests.per_second))
        interval = per_job_submit / limits.requests.per_second
    by_class = {"submit": submits, "status": sum(n[1] for n in need)}
    by_class["results"] = sum(n[2] for n in need)
    for endpoint, rate in limits.endpoints.items():
        if endpoint in by_class:
            budgets.append((by_class[endpoint], rate.per_second))
            if endpoint == "submit":
                interval = max(interval, per_job_submit / rate.per_second)
    return Lane(durations, limits.in_flight, budgets, interval)
