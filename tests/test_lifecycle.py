from __future__ import annotations

import pytest

from runner.errors import IllegalTransitionError
from runner.lifecycle import TERMINAL, TRANSITIONS, Event, State, advance


def test_happy_path_reaches_succeeded() -> None:
    state = State.PLANNED
    for event in (Event.SUBMIT, Event.QUEUED, Event.RUNNING, Event.FINISHED, Event.FETCHED):
        state = advance(state, event)
    assert state is State.SUCCEEDED


def test_terminal_states_have_no_way_out_except_unknown_submits_retries_and_releases() -> None:
    exits = {(s, e) for (s, e) in TRANSITIONS if s in TERMINAL}
    assert exits == {
        (State.SUBMIT_UNKNOWN, Event.RECONCILED),
        (State.SUBMIT_UNKNOWN, Event.RESUBMIT),
        (State.FAILED, Event.RETRY),
        (State.TIMED_OUT, Event.RETRY),
        (State.EXPIRED, Event.RETRY),
        (State.SKIPPED, Event.RELEASE),  # held back by a failed canary, then released
    }


def test_only_a_skipped_job_can_be_released_and_it_is_planned_again() -> None:
    assert advance(State.SKIPPED, Event.RELEASE) is State.PLANNED
    for state in set(State) - {State.SKIPPED}:
        with pytest.raises(IllegalTransitionError):
            advance(state, Event.RELEASE)


def test_a_retry_plans_again_only_what_failed_timed_out_or_expired() -> None:
    for state in (State.FAILED, State.TIMED_OUT, State.EXPIRED):
        assert advance(state, Event.RETRY) is State.PLANNED
    for state in set(State) - {State.FAILED, State.TIMED_OUT, State.EXPIRED}:
        with pytest.raises(IllegalTransitionError):
            advance(state, Event.RETRY)


def test_illegal_transition_names_state_and_event() -> None:
    with pytest.raises(IllegalTransitionError, match="no transition from 'succeeded' on 'submit'"):
        advance(State.SUCCEEDED, Event.SUBMIT)


def test_every_state_is_reachable_from_planned() -> None:
    seen = {State.PLANNED}
    frontier = [State.PLANNED]
    while frontier:
        state = frontier.pop()
        for (source, _event), target in TRANSITIONS.items():
            if source is state and target not in seen:
                seen.add(target)
                frontier.append(target)
    assert seen == set(State)


def test_detach_ends_a_remote_job_the_provider_cannot_cancel_and_only_that() -> None:
    sources = {source for (source, event) in TRANSITIONS if event is Event.DETACH}
    assert sources == {State.QUEUED, State.RUNNING, State.PAUSED}
    for source in sources:
        assert advance(source, Event.DETACH) is State.DETACHED
    assert State.DETACHED.terminal
    assert not State.DETACHED.remote  # no longer counts against the in-flight cap
    with pytest.raises(IllegalTransitionError):
        advance(State.FETCHING, Event.DETACH)  # finished remotely: fetched, never detached


def test_cancelled_is_reached_only_by_an_accepted_cancel_or_the_provider_saying_so() -> None:
    into = {event for (_, event), target in TRANSITIONS.items() if target is State.CANCELLED}
    assert into == {Event.CANCEL, Event.CANCELLED}
