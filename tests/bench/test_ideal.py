"""The ideal of tests/bench/ideal.py: each bound on cases worked by hand."""

from __future__ import annotations

import pytest

from runner.plan import JobSpec, Limits, Rate
from runner.providers.registry import PROVIDERS
from tests.bench.ideal import (
    Lane,
    lane_for,
    lane_ideal,
    minimum_requests,
    rate_bound,
    scenario_ideal,
    schedule_bound,
)


def test_slots_bound_a_batch_as_longest_first_list_scheduling() -> None:
    # LPT on 2 slots: 4 | 3, then 2 after the 3, then 1 after the 4: both end at 5.
    assert schedule_bound([1, 2, 3, 4], 2, 0.0) == 5
    assert schedule_bound([1, 2, 3, 4], None, 0.0) == 4  # no cap: the longest job
    assert schedule_bound([3, 3, 3], 1, 0.0) == 9
    assert schedule_bound([], 3, 1.0) == 0


def test_paced_submits_start_the_longest_job_first() -> None:
    # Longest first: 10 from t=0, then the 1 s jobs at t=1 and t=2: the 10 s job ends last.
    assert schedule_bound([1, 1, 10], None, 1.0) == 10
    assert schedule_bound([5, 5, 5], None, 1.0) == 7  # the last submit at t=2, plus 5
    assert schedule_bound([5, 5, 5], 1, 1.0) == 15  # one slot: pacing never binds


def test_the_rate_bound_is_the_slowest_budget() -> None:
    assert rate_bound([(300, 10.0), (100, 2.0)]) == 50
    assert rate_bound([]) == 0


def test_a_lane_and_a_scenario_take_the_larger_bound() -> None:
    slot_bound = Lane([5.0] * 100, 10, [(300, 20.0)])  # slots: 50 s; rate: 15 s
    rate_bound_lane = Lane([1.0] * 100, 50, [(300, 2.0)])  # slots: 2 s; rate: 150 s
    assert lane_ideal(slot_bound) == 50
    assert lane_ideal(rate_bound_lane) == 150
    assert scenario_ideal([slot_bound, rate_bound_lane]) == 150
    assert scenario_ideal([]) == 0


def _job(provider: str, kind: str, params: dict[str, object], n: int = 0) -> JobSpec:
    return JobSpec(id=f"j{n}", provider=provider, type=kind, params=params, index=n)


def test_minimum_requests_follow_the_providers_estimate_rules() -> None:
    pulse = _job("pulse", "extract", {"file_url": "https://f.example/a.pdf"})
    assert minimum_requests(PROVIDERS["pulse"], pulse) == (1, 1, 0)
    lobstr = _job("lobstr", "run", {"crawler": "maps", "tasks": [{"url": "https://m.example"}]})
    assert minimum_requests(PROVIDERS["lobstr"], lobstr) == (3, 1, 1)


def test_a_lane_for_a_provider_with_an_overall_rate_and_one_with_endpoint_rates() -> None:
    jobs = [_job("pulse", "extract", {"file_url": f"https://f/{n}"}, n) for n in range(10)]
    lane = lane_for(PROVIDERS["pulse"], jobs, [2.0] * 10, Limits(Rate(4, 1.0), in_flight=5))
    assert lane.budgets == [(20, 4.0)]
    assert lane.submit_interval == pytest.approx(0.25)
    assert lane_ideal(lane) == 5.0  # 20 requests at 4/s; the slots would allow 4 s
    params = {"crawler": "maps", "tasks": [{"url": "https://m.example"}]}
    runs = [_job("lobstr", "run", params, n) for n in range(6)]
    limits = Limits(endpoints={"submit": Rate(3, 1.0), "status": Rate(1, 1.0)}, in_flight=None)
    lane = lane_for(PROVIDERS["lobstr"], runs, [1.0] * 6, limits)
    assert lane.budgets == [(18, 3.0), (6, 1.0)]
    assert lane.submit_interval == 1.0
    assert lane_ideal(lane) == 6.0
