"""The poll policy (runner.engine.polling): pure functions, time and RNG passed in."""

from __future__ import annotations

import random
from typing import Any

import pytest

from runner.engine.polling import (
    FLOOR,
    MAX_SAMPLES,
    MIN_SAMPLES,
    OTHERS_PER_JOB,
    SHARE_MIN,
    SHARE_OWN,
    SHARE_SHARED,
    Budget,
    Durations,
    Regime,
    Tracker,
    regime,
    spare_delay,
    thrifty_delay,
)
from runner.http.backoff import poll_ceiling
from runner.plan import PollPolicy

SPIDRA = PollPolicy(5.0, 15.0, 1.5)  # today's Spidra default: first poll at 5 s


def durations(*values: float) -> Durations:
    found = Durations()
    for value in values:
        found.add(value)
    return found


# -- the regime --------------------------------------------------------------------------------


def test_nothing_waiting_to_be_submitted_leaves_the_budget_spare() -> None:
    assert regime(submits_waiting=False, free_slots=0, status_rate=1.0, first_interval=5.0) == (
        Regime.SPARE
    )


def test_submits_waiting_for_slots_leave_the_budget_spare() -> None:
    # 10 pending cap, all taken, 19 req/s: the slots bind, not the requests
    assert regime(submits_waiting=True, free_slots=0, status_rate=19.0, first_interval=5.0) == (
        Regime.SPARE
    )


def test_submits_that_only_the_rate_holds_back_make_polls_thrifty() -> None:
    # 1,000 free slots at 5 req/s take 200 s to fill: requests bind
    assert regime(submits_waiting=True, free_slots=1000, status_rate=5.0, first_interval=3.0) == (
        Regime.THRIFTY
    )
    assert regime(submits_waiting=True, free_slots=None, status_rate=5.0, first_interval=3.0) == (
        Regime.THRIFTY
    )


# -- spare budget: detect completions sooner ----------------------------------------------------


def test_spare_budget_polls_every_job_at_its_share_of_the_rate() -> None:
    # S3: 10 jobs in flight, 20 req/s shared with submits: each polls every 10 / (19 x 0.5) s
    budget = Budget(in_flight=10, status_rate=19.0)
    delay = spare_delay(SPIDRA, 0, 0.0, budget, random.Random(1), Durations())
    assert delay == pytest.approx(10 / (19.0 * SHARE_SHARED))
    assert delay < poll_ceiling(SPIDRA, 0) / 1.5  # sooner than today's first poll could be


def test_a_status_only_budget_is_shared_by_polls_alone() -> None:
    budget = Budget(in_flight=10, status_rate=19.0, own=True)
    delay = spare_delay(SPIDRA, 0, 0.0, budget, random.Random(1), Durations())
    assert delay == pytest.approx(10 / (19.0 * SHARE_OWN))


def test_spare_polls_never_come_faster_than_the_floor() -> None:
    budget = Budget(in_flight=1, status_rate=1000.0)
    assert spare_delay(SPIDRA, 0, 0.0, budget, random.Random(1), Durations()) == FLOOR


def test_spare_polls_are_never_later_than_the_policy() -> None:
    # a tiny budget's share would say 100 s; the policy's first interval is at most 5 s ...
    budget = Budget(in_flight=10, status_rate=0.5)
    rng, again = random.Random(3), random.Random(3)
    delay = spare_delay(SPIDRA, 0, 0.0, budget, rng, Durations())
    # ... but every job in flight polling that often must still fit the whole budget
    assert delay == pytest.approx(10 / 0.5)
    assert spare_delay(SPIDRA, 0, 0.0, Budget(1, 0.5), again, Durations()) <= 5.0


def test_spare_polls_wait_for_the_earliest_completion_seen() -> None:
    seen = durations(*(2.0 + i * 0.1 for i in range(50)))  # nothing finished before 2 s
    budget = Budget(in_flight=10, status_rate=19.0)
    delay = spare_delay(SPIDRA, 0, 0.0, budget, random.Random(1), seen)
    assert delay >= 2.0
    # past that age, back to the fast interval
    later = spare_delay(SPIDRA, 3, 4.0, budget, random.Random(1), seen)
    assert later == pytest.approx(budget.interval(seen))


def test_jobs_too_young_to_have_ended_leave_their_polls_to_the_others() -> None:
    # nothing ended before 2 s of jobs lasting 4.45 s on average: ~45 % of those in flight
    # are that young, so about 5 of 10 poll, each more often
    seen = durations(*(2.0 + i * 0.1 for i in range(50)))
    budget = Budget(in_flight=10, status_rate=19.0)
    assert budget.polling(seen) == round(10 * (1 - seen.quantile(0.02) / seen.mean())) == 5
    assert budget.polling(Durations()) == 10  # nothing known: all of them
    assert budget.interval(seen) < Budget(10, 19.0).interval(Durations())
    instant = durations(*([5.0] * 10))  # all alike: the quantile is the mean itself
    assert budget.polling(instant) == 1  # MIN_POLLING of 10, at least one


def test_known_durations_leave_polls_what_submits_and_fetches_do_not_need() -> None:
    # 10 jobs of ~4.45 s: ~2.2 submits/s and as many result pages out of 19 req/s
    seen = durations(*(2.0 + i * 0.1 for i in range(50)))
    budget = Budget(in_flight=10, status_rate=19.0)
    others = OTHERS_PER_JOB * 10 / seen.mean()
    assert budget.share(seen) == pytest.approx(SHARE_OWN - others / 19.0)
    assert budget.share(seen) > SHARE_SHARED  # more than the blind half
    assert budget.share(Durations()) == SHARE_SHARED
    crowded = Budget(in_flight=1000, status_rate=19.0)
    assert crowded.share(seen) == SHARE_MIN  # polls keep a part whatever the submits need
    assert Budget(10, 19.0, own=True).share(seen) == SHARE_OWN


def test_without_a_budget_the_spare_regime_keeps_the_policy() -> None:
    rng, again = random.Random(5), random.Random(5)
    delay = spare_delay(SPIDRA, 2, 0.0, Budget(10, None), rng, Durations())
    ceiling = poll_ceiling(SPIDRA, 2)
    assert ceiling / 1.5 <= delay <= ceiling
    assert delay == spare_delay(SPIDRA, 2, 0.0, Budget(10, None), again, Durations())


# -- requests bind: poll where completions are likely ------------------------------------------


def test_thrifty_polls_follow_the_policy_until_enough_jobs_finished() -> None:
    few = durations(*([30.0] * (MIN_SAMPLES - 1)))
    delay = thrifty_delay(SPIDRA, 0, 0.0, Budget(1, 100.0), random.Random(2), few)
    assert poll_ceiling(SPIDRA, 0) / 1.5 <= delay <= poll_ceiling(SPIDRA, 0)


def test_thrifty_polls_go_to_the_next_quantile_of_the_durations_seen() -> None:
    # durations 20..60 s; the policy's first interval (10 s) allows about 4 steps a job
    seen = durations(*(20.0 + i * 0.4 for i in range(101)))
    policy = PollPolicy(10.0, 60.0, 1.5)
    first = thrifty_delay(policy, 0, 0.0, Budget(1, 100.0), random.Random(2), seen)
    assert first == pytest.approx(seen.quantile(0.25 - 1e-9), abs=0.5)  # ≈ 30 s, not 10
    # a job 35 s old (≈ the 37th percentile) next polls about a quarter further on
    later = thrifty_delay(policy, 1, 35.0, Budget(1, 100.0), random.Random(2), seen)
    assert 35.0 + later == pytest.approx(seen.quantile(seen.cdf(35.0) + 0.25 - 1e-9), abs=0.5)


def test_a_job_older_than_every_duration_seen_goes_back_to_the_policy() -> None:
    seen = durations(*([10.0] * 20))
    delay = thrifty_delay(SPIDRA, 4, 50.0, Budget(1, 100.0), random.Random(2), seen)
    assert poll_ceiling(SPIDRA, 4) / 1.5 <= delay <= poll_ceiling(SPIDRA, 4)


def test_progress_extrapolates_the_time_left() -> None:
    # 40 % done after 20 s: at that pace, 30 s to go
    policy = PollPolicy(10.0, 60.0, 1.5)
    delay = thrifty_delay(policy, 1, 20.0, Budget(1, 100.0), random.Random(2), Durations(), 0.4)
    assert delay == pytest.approx(30.0)
    # never further than the policy's longest interval (15 s for Spidra)
    capped = thrifty_delay(SPIDRA, 1, 20.0, Budget(1, 100.0), random.Random(2), Durations(), 0.4)
    assert capped == SPIDRA.max


def test_a_manifest_s_faster_policy_beats_the_floor() -> None:
    fast = PollPolicy(0.05, 0.3, 1.5)
    rng = random.Random(4)
    assert thrifty_delay(fast, 0, 0.0, Budget(1, 1000.0), rng, Durations()) < FLOOR
    assert spare_delay(fast, 0, 0.0, Budget(1, 1000.0), rng, Durations()) < FLOOR


@pytest.mark.parametrize("progress", [None, 0.0, 0.01, 1.0])
def test_progress_too_small_or_complete_says_nothing(progress: float | None) -> None:
    rng, again = random.Random(2), random.Random(2)
    delay = thrifty_delay(SPIDRA, 1, 20.0, Budget(1, 100.0), rng, Durations(), progress)
    assert delay == thrifty_delay(SPIDRA, 1, 20.0, Budget(1, 100.0), again, Durations())


def test_thrifty_polls_still_fit_the_budget() -> None:
    seen = durations(*([5.0] * 10))
    delay = thrifty_delay(SPIDRA, 0, 0.0, Budget(100, 2.0), random.Random(2), seen, 0.9)
    assert delay == pytest.approx(100 / 2.0)


# -- durations and the tracker -------------------------------------------------------------------


def test_durations_keep_the_latest_samples_sorted() -> None:
    seen = Durations()
    for i in range(MAX_SAMPLES + 10):
        seen.add(float(MAX_SAMPLES + 10 - i))  # descending
    assert len(seen) == MAX_SAMPLES
    assert seen.values == sorted(seen.values)
    assert seen.values[-1] == float(MAX_SAMPLES)  # the 10 oldest (largest) are gone
    assert seen.mean() == pytest.approx(sum(seen.values) / MAX_SAMPLES)
    assert seen.cdf(0.5) == 0.0
    assert seen.cdf(1e9) == 1.0


def test_a_finished_job_counts_the_middle_of_its_last_poll_interval() -> None:
    tracker = Tracker()
    tracker.submitted("j", 100.0)
    tracker.polled("j", 104.0)
    tracker.finished("j", 106.0)
    assert tracker.durations.values == [5.0]
    assert "j" not in tracker.started
    assert "j" not in tracker.last_poll


def test_a_job_seen_finished_at_its_first_poll_counts_until_then() -> None:
    tracker = Tracker()
    tracker.submitted("j", 10.0)
    tracker.finished("j", 13.0)
    assert tracker.durations.values == [3.0]


def test_a_resumed_job_counts_its_age_from_now_and_adds_no_duration() -> None:
    tracker = Tracker()
    assert tracker.age("r", 50.0) == 0.0
    assert tracker.age("r", 52.0) == 2.0
    tracker.forget("r")
    tracker.finished("r", 60.0)  # its start was forgotten: no sample
    assert len(tracker.durations) == 0


def test_the_tracker_chooses_the_regime_s_delay() -> None:
    tracker = Tracker()
    tracker.submitted("j", 0.0)
    budget = Budget(in_flight=10, status_rate=19.0)
    spare = tracker.delay("j", SPIDRA, 0, 1.0, Regime.SPARE, budget, random.Random(1))
    assert spare == pytest.approx(10 / (19.0 * SHARE_SHARED))
    thrifty = tracker.delay("j", SPIDRA, 0, 1.0, Regime.THRIFTY, budget, random.Random(1), 0.5)
    assert thrifty == pytest.approx(1.0)  # half done after 1 s


# -- the engine picks the regime ----------------------------------------------------------------


@pytest.mark.anyio
async def test_the_engine_polls_sooner_when_slots_bind_and_by_policy_when_requests_do() -> None:
    import dataclasses

    from runner.plan import Limits, Rate
    from tests.test_engine import FakeAdapter, make_engine, make_plan

    slow = PollPolicy(5.0, 15.0, 1.5)

    def engine_for(limits: Limits) -> Any:
        plan = make_plan(50, limits=limits)
        plan = dataclasses.replace(
            plan, jobs=tuple(dataclasses.replace(j, poll=slow) for j in plan.jobs)
        )
        engine, _, _ = make_engine(plan, FakeAdapter())
        return engine

    def first_delay(engine: Any) -> float:
        lane = engine.lanes["spidra"]
        job = lane.pending.popleft()  # submitted: the other 49 still wait
        lane.gate.jobs_in_flight += 1
        before = lane.gate.clock.now()
        engine._next_poll(lane, job)
        return float(lane.polls[0][0] - before)

    # 1 slot, taken; 100 req/s spare: poll at the floor, not after 5 s
    slots = engine_for(Limits(requests=Rate(100, 1.0), in_flight=1))
    assert first_delay(slots) == pytest.approx(FLOOR, abs=0.01)
    # no cap, 1 req/s: the submits wait for requests, the policy's first interval holds
    requests = engine_for(Limits(requests=Rate(1, 1.0)))
    assert slow.initial / 1.5 - 0.01 <= first_delay(requests) <= slow.initial + 0.01


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
