"""The job lifecycle: normalized states, the events that move them, and the one table.

Nothing outside this module assigns a state: callers ask `advance(state, event)` and get the
next state or an IllegalTransitionError. The table is data, like h11's state machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from runner.errors import IllegalTransitionError
from runner.plan import JobSpec
from runner.remote import RemoteRef, Status


class State(StrEnum):
    PLANNED = "planned"
    SUBMITTING = "submitting"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    FETCHING = "fetching"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DETACHED = "detached"  # asked to cancel, but the provider has no cancel: it runs on
    EXPIRED = "expired"
    TIMED_OUT = "timed_out"
    SUBMIT_UNKNOWN = "submit_unknown"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def remote(self) -> bool:
        """A remote job exists and is not finished: it counts against the in-flight cap."""
        return self in REMOTE_ACTIVE


TERMINAL = frozenset(
    {
        State.SUCCEEDED,
        State.FAILED,
        State.CANCELLED,
        State.DETACHED,
        State.EXPIRED,
        State.TIMED_OUT,
        State.SUBMIT_UNKNOWN,
        State.SKIPPED,
    }
)
REMOTE_ACTIVE = frozenset({State.QUEUED, State.RUNNING, State.PAUSED})
# Endings that did not succeed and were not a deliberate skip: logged as warnings and
# printed even under --quiet (console, log).
UNSUCCESSFUL = TERMINAL - {State.SUCCEEDED, State.SKIPPED}
RETRIABLE = frozenset({State.FAILED, State.TIMED_OUT, State.EXPIRED})  # `runner retry`


class Event(StrEnum):
    SUBMIT = "submit"  # a submit request is about to be sent
    DEFERRED = "deferred"  # the provider provably did not accept it (429, refused): try later
    REJECTED = "rejected"  # the provider refused this job for good (validation error)
    AMBIGUOUS = "ambiguous"  # it may have been accepted: never re-send blindly
    RECONCILED = "reconciled"  # an ambiguous submit was found on the provider's side
    RESUBMIT = "resubmit"  # the user asked to re-send an ambiguous submit
    QUEUED = "observed_queued"  # the provider reports: waiting
    RUNNING = "observed_running"  # ... working
    PAUSED = "observed_paused"  # ... paused (Lobstr), with its own maximum wait
    FINISHED = "observed_finished"  # ... finished successfully: fetch the results now
    FAILED = "observed_failed"  # ... failed
    CANCELLED = "observed_cancelled"  # ... cancelled (by us or anyone)
    EXPIRED = "observed_expired"  # ... results purged (Pulse `expired`)
    FETCHED = "fetched"  # every result is on disk
    GONE = "gone"  # a result could not be fetched again (Pulse 410)
    ERROR = "error"  # this job cannot go on (malformed response, not found, fetch error)
    TIMEOUT = "timeout"  # the job outlived its timeout
    CANCEL = "cancel"  # the provider accepted our cancel (interrupt, `runner cancel`)
    DETACH = "detach"  # `runner cancel` on a job its provider cannot cancel: it runs on
    SKIP = "skip"  # never submitted: its provider stopped (bad key, no credits) or filtered
    RETRY = "retry"  # `runner retry`: a new attempt of a job that failed, timed out or expired
    REUSE = "reused"  # `runner run`: an earlier batch's verified result of the same fingerprint
    RELEASE = "release"  # a job the canary held back (skipped) is to be sent after all


_OBSERVED = {
    Event.QUEUED: State.QUEUED,
    Event.RUNNING: State.RUNNING,
    Event.PAUSED: State.PAUSED,
    Event.FINISHED: State.FETCHING,
    Event.FAILED: State.FAILED,
    Event.CANCELLED: State.CANCELLED,
    Event.EXPIRED: State.EXPIRED,
}


def _table() -> dict[tuple[State, Event], State]:
    table: dict[tuple[State, Event], State] = {
        (State.PLANNED, Event.SUBMIT): State.SUBMITTING,
        (State.PLANNED, Event.SKIP): State.SKIPPED,
        (State.PLANNED, Event.REUSE): State.SUCCEEDED,  # nothing is sent (runner.batch.reuse)
        (State.SUBMITTING, Event.DEFERRED): State.PLANNED,
        (State.SUBMITTING, Event.REJECTED): State.FAILED,
        (State.SUBMITTING, Event.AMBIGUOUS): State.SUBMIT_UNKNOWN,
        (State.SUBMITTING, Event.SKIP): State.SKIPPED,
        (State.SUBMIT_UNKNOWN, Event.RECONCILED): State.QUEUED,
        (State.SUBMIT_UNKNOWN, Event.RESUBMIT): State.PLANNED,
        (State.FETCHING, Event.FETCHED): State.SUCCEEDED,
        (State.FETCHING, Event.GONE): State.EXPIRED,
        (State.FETCHING, Event.ERROR): State.FAILED,
        (State.FETCHING, Event.TIMEOUT): State.TIMED_OUT,
    }
    # A submit's reply, or any later poll, reports the remote state.
    for source in (State.SUBMITTING, State.QUEUED, State.RUNNING, State.PAUSED):
        for event, target in _OBSERVED.items():
            table[(source, event)] = target
    for source in (State.QUEUED, State.RUNNING, State.PAUSED):
        table[(source, Event.ERROR)] = State.FAILED
        table[(source, Event.TIMEOUT)] = State.TIMED_OUT
        table[(source, Event.CANCEL)] = State.CANCELLED
        table[(source, Event.DETACH)] = State.DETACHED
    table[(State.SUBMITTING, Event.ERROR)] = State.FAILED
    # Only these endings can be tried again: a succeeded job never is, cancelled and skipped
    # were the user's or the provider's decision, submit_unknown may exist remotely.
    for source in RETRIABLE:
        table[(source, Event.RETRY)] = State.PLANNED
    # Never sent, held back by a failed canary (`runner run --sample`): once the sample
    # succeeds (`runner retry`), it is planned again.
    table[(State.SKIPPED, Event.RELEASE)] = State.PLANNED
    return table


TRANSITIONS: dict[tuple[State, Event], State] = _table()


def advance(state: State, event: Event) -> State:
    """The state after `event`, or IllegalTransitionError."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransitionError(state, event) from None


@dataclass(slots=True)
class JobRecord:
    """One job's runtime record: what the engine drives and the journal stores.

    Mutable on purpose (one per job, changed in place); only `transition` in the engine
    changes `state`, through `advance`.
    """

    spec: JobSpec
    state: State = State.PLANNED
    remote: RemoteRef | None = None
    attempts: int = 0  # submit attempts sent
    polls: int = 0
    submitted_at: float | None = None  # unix time the remote id was recorded
    finished_at: float | None = None  # unix time it became terminal
    next_poll_at: float | None = None  # unix time of the next poll
    raw_status: str | None = None  # the provider's last status string
    reason: str | None = None  # provider reason / error code
    progress: float | None = None
    partial: bool = False
    results_ready: bool = True
    error: str | None = None  # our message when it did not succeed
    notes: dict[str, Any] = field(default_factory=dict)  # the adapter's durable memory
    attempt: int = 1  # 1 + the times `runner retry` sent this job again (job.json says so)


class Recorder(Protocol):
    """Told of every change to a job, synchronously, before the engine goes on.

    The journal (durability), the log and the console are recorders.
    """

    def transition(self, job: JobRecord, event: Event, previous: State) -> None: ...

    def polled(self, job: JobRecord, status: Status) -> None: ...

    def noted(self, job: JobRecord, key: str) -> None:
        """The adapter noted `key` (ProviderHttp.note): persist `job.notes` now."""
        ...
