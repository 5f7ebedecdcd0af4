from __future__ import annotations

import random

import pytest

from runner.http.backoff import (
    RetryPolicy,
    budget_interval,
    poll_ceiling,
    poll_delay,
    retry_delay,
)
from runner.plan import PollPolicy

POLICY = PollPolicy(initial=2.0, max=60.0, multiplier=1.5)


def test_ceiling_grows_by_multiplier_to_max() -> None:
    assert [poll_ceiling(POLICY, k) for k in range(4)] == [2.0, 3.0, 4.5, 6.75]
    assert poll_ceiling(POLICY, 9) == 60.0  # 2 * 1.5**9 = 76.9 > 60
    assert poll_ceiling(POLICY, 10**6) == 60.0  # no overflow for long-lived jobs


def test_fixed_schedule_when_multiplier_is_one() -> None:
    fixed = PollPolicy(3.0, 10.0, 1.0)
    assert {poll_ceiling(fixed, k) for k in range(20)} == {3.0}


def test_jitter_spans_one_growth_step() -> None:
    rng = random.Random(1)
    for k in range(12):
        ceiling = poll_ceiling(POLICY, k)
        draws = [poll_delay(POLICY, k, rng) for _ in range(400)]
        assert min(draws) >= ceiling / 1.5
        assert max(draws) <= ceiling
        # spread over the whole step, not bunched at one end
        assert min(draws) < ceiling / 1.5 + 0.05 * ceiling
        assert max(draws) > ceiling - 0.05 * ceiling


def test_fixed_schedule_still_jitters_a_little() -> None:
    draws = [poll_delay(PollPolicy(1.0, 1.0, 1.0), 3, random.Random(i)) for i in range(200)]
    assert 0.8 <= min(draws) < 0.82
    assert 0.98 < max(draws) <= 1.0


def test_same_seed_same_schedule() -> None:
    a = [poll_delay(POLICY, k, random.Random(7)) for k in range(10)]
    b = [poll_delay(POLICY, k, random.Random(7)) for k in range(10)]
    assert a == b


def test_budget_interval_is_jobs_over_rate() -> None:
    assert budget_interval(100, 4.0) == 25.0
    assert budget_interval(0, 4.0) == 0.0
    assert budget_interval(10, None) == 0.0


def test_retry_delay_is_full_jitter_capped_and_hint_wins_unclamped() -> None:
    policy = RetryPolicy(attempts=5, base=1.0, cap=4.0)
    rng = random.Random(5)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 4.0), (9, 4.0)]:
        draws = [retry_delay(policy, attempt, rng) for _ in range(300)]
        assert 0.0 <= min(draws) < 0.1 * ceiling
        assert 0.9 * ceiling < max(draws) <= ceiling
    assert retry_delay(policy, 1, rng, hint=3600.0) == 3600.0


@pytest.mark.parametrize("attempt", [0, 1])
def test_first_retry_is_bounded_by_base(attempt: int) -> None:
    assert retry_delay(RetryPolicy(base=0.5), attempt, random.Random(0)) <= 0.5
