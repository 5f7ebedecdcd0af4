"""The engine: drives every job from planned to a terminal state, inside every limit.

Per provider a fixed pool of worker tasks (≈ its connection pool) pulls work from two
queues: polls due in a heap ordered by due time (the most overdue first), and submits in
plan order (deferred submits first). No task exists per job, so memory follows the jobs in
flight (performance.md §2.4). Every state change goes through `Engine.transition`, which
asks `lifecycle.advance` and then tells every Recorder synchronously, before anything else
happens to the job (the journal commits a remote id the moment it is known).
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio

from runner.backoff import DEFAULT_RETRY, RetryPolicy, next_poll_delay, retry_delay
from runner.durations import format_duration
from runner.errors import JobFailedError, NotSubmittedError, ProviderResponseError
from runner.http import ProviderCallError, ProviderClient, Transport
from runner.lifecycle import TERMINAL, Event, JobRecord, Recorder, State, advance
from runner.limits import Gate
from runner.plan import Plan, ProviderSettings
from runner.providers.base import (
    Adapter,
    ErrorKind,
    FetchReport,
    RemoteState,
    Reply,
    ResultSink,
    Status,
)

MAX_SUBMIT_ATTEMPTS = 12  # sends of one submit that were provably not accepted, then fail
MAX_POLL_ERRORS = 5  # consecutive failed polls (after http's own retries), then fail
INTERRUPT_GRACE = 3.0  # seconds work already under way may take to finish after a signal
SENT_NOTE = "runner.sent"  # the engine's own durable note: a submit attempt left the process
_IN_FLIGHT = frozenset({State.SUBMITTING, State.QUEUED, State.RUNNING, State.PAUSED})

_EVENTS: dict[RemoteState, Event] = {
    RemoteState.QUEUED: Event.QUEUED,
    RemoteState.RUNNING: Event.RUNNING,
    RemoteState.PAUSED: Event.PAUSED,
    RemoteState.SUCCEEDED: Event.FINISHED,
    RemoteState.FAILED: Event.FAILED,
    RemoteState.CANCELLED: Event.CANCELLED,
    RemoteState.EXPIRED: Event.EXPIRED,
}


class JobOutput(ResultSink, Protocol):
    """A job's results directory (runner.results.JobDir)."""

    def write_status(self, payload: Any) -> None: ...

    def write_outcome(self, record: JobRecord, report: FetchReport | None = None) -> None: ...

    def reset(self) -> None:
        """Remove whatever an interrupted fetch left (before fetching again on resume)."""
        ...


class Output(Protocol):
    """The batch's results directory (runner.results.BatchDir)."""

    def job_dir(self, job_id: str) -> JobOutput: ...


Notify = Callable[[str, Mapping[str, Any]], None]


@dataclass(slots=True)
class Lane:
    """One provider's share of the engine: its client, queues and stop flags."""

    settings: ProviderSettings
    adapter: Adapter
    client: ProviderClient
    pending: deque[JobRecord] = field(default_factory=deque)  # never sent, plan order
    deferred: list[tuple[float, int, JobRecord]] = field(default_factory=list)  # not before
    polls: list[tuple[float, int, JobRecord]] = field(default_factory=list)  # due heap
    busy: int = 0
    done: bool = False
    stopped: str | None = None  # the key was refused: nothing more is sent
    no_credits: str | None = None  # credits ran out: no more submits
    idle: deque[anyio.Event] = field(default_factory=deque)  # workers waiting for work
    timer: anyio.Event | None = None  # the one idle worker that sleeps until `timer_at`
    timer_at: float = math.inf
    unknown: set[str] = field(default_factory=set)  # raw statuses already reported

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def gate(self) -> Gate:
        return self.client.gate

    def may_submit(self) -> bool:
        return self.stopped is None and self.no_credits is None

    def notify_all(self) -> None:
        """Wake every idle worker (a stop, or the end): rare."""
        while self.idle:
            self.idle.popleft().set()
        self.timer = None

    def notify_one(self) -> None:
        """Wake one idle worker to look for work (it becomes the timer if it finds none)."""
        if self.idle:
            self.idle.popleft().set()

    def due_sooner(self, due: float) -> None:
        """New work is due at `due`: wake the timer if it sleeps past that."""
        if self.timer is None:
            self.notify_one()
        elif due < self.timer_at:
            self.timer.set()


@dataclass(frozen=True, slots=True)
class EngineResult:
    counts: Mapping[State, int]
    notices: tuple[str, ...]  # one line per provider-level event (stopped, no credits)

    @property
    def succeeded(self) -> bool:
        return all(state is State.SUCCEEDED for state, n in self.counts.items() if n)


class Engine:
    """Runs a plan's jobs. `records` continue an earlier batch (resume); default: all planned."""

    def __init__(
        self,
        plan: Plan,
        *,
        clients: Mapping[str, ProviderClient],
        adapters: Mapping[str, Adapter],
        output: Output,
        recorders: Sequence[Recorder] = (),
        records: Iterable[JobRecord] | None = None,
        rng: random.Random | None = None,
        notify: Notify | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        resubmit_unknown: bool = False,
    ) -> None:
        self.plan = plan
        self.output = output
        self.recorders = list(recorders)
        self.rng = rng or random.Random(0)
        self.retry = retry
        self._notify = notify
        self.notices: list[str] = []
        self.records: dict[str, JobRecord] = {}
        self.counts: Counter[State] = Counter()
        self._deadlines: dict[str, float] = {}  # job id → monotonic timeout instant
        self._paused_since: dict[str, float] = {}  # job id → monotonic instant it paused
        self._poll_errors: dict[str, int] = {}
        self.interrupted: str | None = None  # why the run stopped early (a signal)
        self.cancel_failures: list[str] = []  # remote cancels that failed (interrupt, cancel)
        self._scope: anyio.CancelScope | None = None
        self._seq = 0
        self.lanes: dict[str, Lane] = {}
        for name, client in clients.items():
            self.lanes[name] = Lane(plan.providers[name], adapters[name], client)
        given = list(records) if records is not None else [JobRecord(s) for s in plan.jobs]
        self._orphans: list[tuple[JobRecord, str]] = []
        self._resumed: list[JobRecord] = []
        for record in given:
            self.records[record.spec.id] = record
            self.counts[record.state] += 1
            lane = self.lanes.get(record.spec.provider)
            if lane is None:
                self._orphans.append((record, record.spec.provider))
            elif record.state is State.PLANNED:
                lane.pending.append(record)
            elif record.state in _IN_FLIGHT or record.state is State.FETCHING:
                self._resumed.append(record)
                lane.gate.jobs_in_flight += record.state in _IN_FLIGHT
            elif record.state is State.SUBMIT_UNKNOWN and resubmit_unknown:
                self._resumed.append(record)

    # -- the one place a state changes -----------------------------------------------------

    def transition(self, job: JobRecord, event: Event, **changes: Any) -> State:
        """Move `job` by `event` (lifecycle.advance), apply `changes`, tell every Recorder."""
        previous = job.state
        state = advance(previous, event)
        for name, value in changes.items():
            setattr(job, name, value)
        job.state = state
        if state in TERMINAL and job.finished_at is None:
            job.finished_at = time.time()
        self.counts[previous] -= 1
        self.counts[state] += 1
        lane = self.lanes.get(job.spec.provider)
        if lane is not None:
            lane.gate.jobs_in_flight += (state in _IN_FLIGHT) - (previous in _IN_FLIGHT)
            if (state is State.PAUSED) is not (previous is State.PAUSED):
                self._pause_clock(lane, job, paused=state is State.PAUSED)
        for recorder in self.recorders:
            recorder.transition(job, event, previous)
        return state

    def _pause_clock(self, lane: Lane, job: JobRecord, *, paused: bool) -> None:
        """Time spent paused does not count against the job's timeout: the deadline moves
        on by the length of each pause (which `max_paused` bounds on its own)."""
        now = lane.gate.clock.now()
        if paused:
            self._paused_since[job.spec.id] = now
            return
        since = self._paused_since.pop(job.spec.id, None)
        if since is not None and job.spec.id in self._deadlines:
            self._deadlines[job.spec.id] += now - since

    def _deadline(self, lane: Lane, job: JobRecord) -> float:
        """When the job times out: its timeout, or while paused, the end of `max_paused`."""
        since = self._paused_since.get(job.spec.id)
        if since is None:
            return self._deadlines.get(job.spec.id, math.inf)
        limit = lane.settings.max_paused
        return math.inf if limit is None else since + limit

    def _http(self, lane: Lane, job: JobRecord) -> ProviderClient:
        """The provider's client as seen by one job, carrying that job's durable notes."""
        return lane.client.for_job(
            job.spec.id, notes=job.notes, on_note=lambda key: self._noted(job, key)
        )

    def _noted(self, job: JobRecord, key: str) -> None:
        for recorder in self.recorders:
            recorder.noted(job, key)

    def mark_sent(self, job: JobRecord) -> None:
        """A request of this submit attempt is about to go on the wire: journal it first,
        so a resume can tell "never sent" (safe to send) from "maybe accepted"."""
        job.notes[SENT_NOTE] = {"attempt": job.attempts, "at": time.time()}
        self._noted(job, SENT_NOTE)

    def notice(self, event: str, message: str, **fields: Any) -> None:
        """A provider-level event for the user (one line) and the log."""
        self.notices.append(message)
        if self._notify is not None:
            self._notify(event, {"message": message, **fields})

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> EngineResult:
        """Drive every job to a terminal state, or until `interrupt()`; then, per provider
        `on_interrupt`, cancel its remote jobs or leave them for `runner resume`."""
        for record, provider in self._orphans:
            self._finish(
                record, Event.SKIP, error=f"runner has no adapter for provider {provider!r} yet"
            )
        with anyio.CancelScope() as scope:
            self._scope = scope
            await self._resume_all()
            if self.interrupted is None:
                async with anyio.create_task_group() as tg:
                    for lane in self.lanes.values():
                        for _ in range(max(1, lane.gate.pool_size)):
                            tg.start_soon(self._worker, lane)
        self._scope = None
        if self.interrupted is not None:
            await self._after_interrupt()
        return self.result()

    def result(self) -> EngineResult:
        counts = {state: n for state, n in self.counts.items() if n}
        return EngineResult(counts, tuple(self.notices))

    def interrupt(self, reason: str, *, grace: float = INTERRUPT_GRACE) -> None:
        """Stop: nothing more is submitted or polled. Work already taken finishes within
        `grace` seconds, then is cancelled (a job cut off mid-fetch is fetched on resume)."""
        if self.interrupted is not None:
            return
        self.interrupted = reason
        for lane in self.lanes.values():
            lane.done = True
            lane.notify_all()
        if self._scope is not None:
            self._scope.deadline = min(self._scope.deadline, anyio.current_time() + grace)

    async def cancel_all(self) -> EngineResult:
        """`runner cancel`: submit nothing more and cancel every remote job still active.

        Jobs never sent are skipped; an interrupted submit is reconciled first (and
        cancelled if found). Jobs already finished remotely (`fetching`) are left for
        `runner resume` to fetch."""
        self.interrupted = "cancelled"
        for record, provider in self._orphans:
            self._finish(
                record, Event.SKIP, error=f"runner has no adapter for provider {provider!r} yet"
            )
        async with anyio.create_task_group() as tg:
            for record in self._resumed:
                if record.state is State.SUBMITTING:
                    tg.start_soon(
                        self._resolve_submitting, self.lanes[record.spec.provider], record
                    )
        for lane in self.lanes.values():
            lane.pending.clear()
        for record in self.records.values():
            if record.state is State.PLANNED:
                self._finish(record, Event.SKIP, error=_CANCELLED_UNSENT)
        await self._cancel_remote(list(self.lanes.values()), _CANCELLED_BY_USER)
        return self.result()

    # -- resume and interrupt --------------------------------------------------------------

    async def _resume_all(self) -> None:
        """Continue the jobs an earlier run left: re-poll what was submitted, resolve
        interrupted submits, re-fetch what was being fetched, re-send unknowns if asked."""
        async with anyio.create_task_group() as tg:
            for record in self._resumed:
                tg.start_soon(self._resume_job, self.lanes[record.spec.provider], record)
        for lane in self.lanes.values():  # back in plan order
            lane.pending = deque(sorted(lane.pending, key=lambda job: job.spec.index))

    async def _resume_job(self, lane: Lane, job: JobRecord) -> None:
        if job.state is State.SUBMIT_UNKNOWN:  # --resubmit-unknown: the user accepts the risk
            self.transition(job, Event.RESUBMIT, error=None)
            lane.pending.append(job)
            return
        if job.state is State.SUBMITTING:
            if await self._resolve_submitting(lane, job) is State.PLANNED:
                lane.pending.append(job)
            return
        if job.state is State.FETCHING:
            self.output.job_dir(job.spec.id).reset()  # whatever a cut-off fetch left
        if job.state is State.PAUSED:
            self._paused_since[job.spec.id] = lane.gate.clock.now()
        left = job.spec.timeout
        if job.submitted_at is not None:
            left -= time.time() - job.submitted_at
        self._deadlines[job.spec.id] = lane.gate.clock.now() + left
        self._schedule(lane, job, 0.0)

    async def _resolve_submitting(self, lane: Lane, job: JobRecord) -> State:
        """A job the journal left in `submitting`: the process died (or was stopped) while
        its submit was under way. Nothing sent → planned again. Sent → ask the provider
        (reconcile): found → polled from now on; provably absent → planned again; else
        `submit_unknown`, never re-sent blindly."""
        sent = job.notes.get(SENT_NOTE)
        if not isinstance(sent, Mapping) or sent.get("attempt") != job.attempts:
            return self.transition(job, Event.DEFERRED)  # not one byte of it left us
        since = float(sent.get("at") or 0.0)
        try:
            ref = await lane.adapter.reconcile(self._http(lane, job), job.spec, since)
        except NotSubmittedError:
            return self.transition(job, Event.DEFERRED)
        except (ProviderCallError, ProviderResponseError):
            ref = None
        if ref is None:
            self._finish(job, Event.AMBIGUOUS, error=_AMBIGUOUS_RESUMED)
            return job.state
        self.transition(job, Event.AMBIGUOUS, error=_AMBIGUOUS_RESUMED)
        self._deadlines[job.spec.id] = lane.gate.clock.now() + job.spec.timeout
        self.transition(job, Event.RECONCILED, remote=ref, submitted_at=since, error=None)
        if self.interrupted is None:
            self._schedule(lane, job, 0.0)
        return job.state

    async def _after_interrupt(self) -> None:
        """Tidy the journal after a stop, then apply each provider's `on_interrupt`."""
        for job in self.records.values():
            sent = job.notes.get(SENT_NOTE)
            current = isinstance(sent, Mapping) and sent.get("attempt") == job.attempts
            if job.state is State.SUBMITTING and not current:
                self.transition(job, Event.DEFERRED)  # never sent: simply planned again
        lanes = [lane for lane in self.lanes.values() if lane.settings.on_interrupt == "cancel"]
        await self._cancel_remote(lanes, _CANCELLED_ON_INTERRUPT)

    async def _cancel_remote(self, lanes: Sequence[Lane], why: str) -> None:
        """Cancel every remote job still active on `lanes` (concurrently, through the gate)."""

        async def cancel(lane: Lane, job: JobRecord) -> None:
            assert job.remote is not None
            try:
                await lane.adapter.cancel(self._http(lane, job), job.spec, job.remote)
            except (ProviderCallError, ProviderResponseError) as exc:
                job.error = f"the remote cancel failed: {exc}"
                self.cancel_failures.append(f"{job.spec.id}: {job.error}")
                return
            self._finish(job, Event.CANCEL, error=why)

        async with anyio.create_task_group() as tg:
            for lane in lanes:
                for job in list(self.records.values()):
                    if job.spec.provider == lane.name and job.state.remote:
                        tg.start_soon(cancel, lane, job)

    async def _worker(self, lane: Lane) -> None:
        while True:
            work = await self._next(lane)
            if work is None:
                return
            kind, job = work
            lane.busy += 1
            try:
                if kind == "poll":
                    await self._poll(lane, job)
                else:
                    await self._submit(lane, job)
            finally:
                lane.busy -= 1

    async def _next(self, lane: Lane) -> tuple[str, JobRecord] | None:
        """The next piece of work for a worker, or None when the provider is finished.

        Idle workers wait on their own event; only one of them (the timer) sleeps until the
        earliest due poll or deferred submit. Waking one worker per change, not all of them,
        keeps the cost per request flat in the pool size (measured in bench_engine).
        """
        clock = lane.gate.clock
        while True:
            if lane.done:
                return None
            now = clock.now()
            work = self._take(lane, now)
            if work is not None:
                if lane.polls or self._submittable(lane):
                    lane.due_sooner(now)  # someone else watches what is left
                return work
            if not lane.polls and lane.busy == 0 and not self._submittable(lane):
                lane.done = True
                lane.notify_all()
                return None
            wake_at = lane.polls[0][0] if lane.polls else math.inf
            if lane.deferred and lane.may_submit():
                wake_at = min(wake_at, lane.deferred[0][0])
            event = anyio.Event()
            timeout = math.inf
            if lane.timer is None:
                lane.timer, lane.timer_at, timeout = event, wake_at, wake_at - now
            lane.idle.append(event)
            with anyio.move_on_after(max(0.0, timeout)):
                await event.wait()
            if lane.timer is event:
                lane.timer, lane.timer_at = None, math.inf
            with contextlib.suppress(ValueError):  # still listed unless notify took it
                lane.idle.remove(event)

    @staticmethod
    def _take(lane: Lane, now: float) -> tuple[str, JobRecord] | None:
        if lane.polls and lane.polls[0][0] <= now:
            return "poll", heapq.heappop(lane.polls)[2]
        if lane.may_submit() and lane.gate.can_submit():
            if lane.deferred and lane.deferred[0][0] <= now:
                return "submit", heapq.heappop(lane.deferred)[2]
            if lane.pending and not lane.deferred:
                return "submit", lane.pending.popleft()
        return None

    @staticmethod
    def _submittable(lane: Lane) -> bool:
        return lane.may_submit() and bool(lane.pending or lane.deferred)

    def _schedule(self, lane: Lane, job: JobRecord, delay: float) -> None:
        now = lane.gate.clock.now()
        due = min(now + delay, self._deadline(lane, job))
        job.next_poll_at = time.time() + (due - now)
        self._seq += 1
        heapq.heappush(lane.polls, (due, self._seq, job))
        lane.due_sooner(due)

    def _next_poll(self, lane: Lane, job: JobRecord) -> None:
        delay = next_poll_delay(
            job.spec.poll,
            job.polls,
            self.rng,
            in_flight=lane.gate.jobs_in_flight,
            status_rate=lane.gate.status_rate(),
        )
        self._schedule(lane, job, delay)

    def _finish(
        self,
        job: JobRecord,
        event: Event,
        *,
        report: FetchReport | None = None,
        status: Status | None = None,
        **changes: Any,
    ) -> None:
        """A terminal transition. The job's files are sealed first (status.json, job.json,
        the committed results stream) and only then the journal says so: a kill in between
        leaves the job where it was, to be fetched or polled again on resume."""
        staged = dataclasses.replace(job, **changes)
        staged.state = advance(job.state, event)
        out = self.output.job_dir(job.spec.id)
        if status is not None:
            out.write_status(status_document(status, job))
        out.write_outcome(staged, report)
        self.transition(job, event, **changes)

    # -- submit ----------------------------------------------------------------------------

    async def _submit(self, lane: Lane, job: JobRecord) -> None:
        spec = job.spec
        self.transition(job, Event.SUBMIT, attempts=job.attempts + 1)
        since = time.time()
        http = self._http(lane, job)
        http = dataclasses.replace(http, transport=_MarkSent(http.transport, self, job))
        try:
            submitted = await lane.adapter.submit(http, spec)
        except ProviderCallError as exc:
            await self._submit_failed(lane, job, exc, since)
            return
        except ProviderResponseError as exc:  # a 2xx we cannot read: it may exist remotely
            self._finish(job, Event.ERROR, error=str(exc))
            return
        except JobFailedError as exc:  # refused before sending (e.g. unsupported type)
            self._finish(job, Event.REJECTED, error=str(exc))
            return
        self._deadlines[spec.id] = lane.gate.clock.now() + spec.timeout
        status = submitted.status
        event = _EVENTS.get(status.state, Event.QUEUED) if status else Event.QUEUED
        self.transition(
            job,
            event,
            remote=submitted.ref,
            submitted_at=time.time(),
            **(_status_fields(status) if status else {}),
        )
        if status is not None:
            self._note_unknown(lane, status)
        await self._after_status(lane, job, status)

    async def _submit_failed(
        self, lane: Lane, job: JobRecord, exc: ProviderCallError, since: float
    ) -> None:
        kind = exc.kind
        if kind is ErrorKind.AUTH:
            self._stop(lane, exc)
            self._finish(job, Event.SKIP, error=lane.stopped)
        elif kind is ErrorKind.CREDITS:
            self._out_of_credits(lane, exc)
            self._finish(job, Event.SKIP, error=lane.no_credits)
        elif exc.not_accepted and kind in (
            ErrorKind.RATE_LIMITED,
            ErrorKind.BUSY,
            ErrorKind.TRANSIENT,
        ):
            if job.attempts >= MAX_SUBMIT_ATTEMPTS:
                error = f"not accepted after {job.attempts} attempts: {exc}"
                self._finish(job, Event.REJECTED, error=error)
                return
            self.transition(job, Event.DEFERRED)
            if exc.code == "TOO_MANY_PENDING_JOBS":
                # The provider's pending-job cap is below what we allowed: learn it.
                lane.gate.in_flight_cap = max(1, lane.gate.jobs_in_flight)
                delay = 0.0 if lane.gate.jobs_in_flight else self._backoff(job)
            elif kind is ErrorKind.RATE_LIMITED:
                delay = 0.0  # the gate is paused already; keep this job's place
            else:
                delay = exc.retry_after if exc.retry_after is not None else self._backoff(job)
            self._seq += 1
            not_before = lane.gate.clock.now() + delay
            heapq.heappush(lane.deferred, (not_before, self._seq, job))
            lane.due_sooner(not_before)
        elif exc.not_accepted or kind in (ErrorKind.INVALID, ErrorKind.NOT_FOUND):
            self._finish(job, Event.REJECTED, error=str(exc))
        else:
            # Sent, and no proof it was not accepted: never re-send blindly.
            ref = None
            try:
                ref = await lane.adapter.reconcile(self._http(lane, job), job.spec, since)
            except NotSubmittedError:  # the provider's own listing proves it is absent
                self.transition(job, Event.DEFERRED)
                self._seq += 1
                not_before = lane.gate.clock.now() + self._backoff(job)
                heapq.heappush(lane.deferred, (not_before, self._seq, job))
                lane.due_sooner(not_before)
                return
            except (ProviderCallError, ProviderResponseError):
                ref = None
            if ref is None:
                self._finish(job, Event.AMBIGUOUS, error=f"{_AMBIGUOUS}: {exc}")
                return
            self.transition(job, Event.AMBIGUOUS, error=f"{_AMBIGUOUS}: {exc}")
            self._deadlines[job.spec.id] = lane.gate.clock.now() + job.spec.timeout
            self.transition(job, Event.RECONCILED, remote=ref, submitted_at=since, error=None)
            self._next_poll(lane, job)

    def _backoff(self, job: JobRecord) -> float:
        return retry_delay(self.retry, job.attempts, self.rng)

    # -- poll ------------------------------------------------------------------------------

    async def _poll(self, lane: Lane, job: JobRecord) -> None:
        spec = job.spec
        if job.state not in _IN_FLIGHT | {State.FETCHING}:
            return
        if lane.stopped is not None:  # taken from the heap just before the stop
            self._finish(job, Event.ERROR, error=lane.stopped)
            return
        if lane.gate.clock.now() >= self._deadline(lane, job):
            await self._timed_out(lane, job)
            return
        assert job.remote is not None
        try:
            status = await lane.adapter.poll(self._http(lane, job), spec, job.remote)
        except ProviderCallError as exc:
            self._poll_failed(lane, job, exc)
            return
        except ProviderResponseError as exc:
            self._finish(job, Event.ERROR, error=str(exc))
            return
        self._poll_errors.pop(spec.id, None)
        job.polls += 1
        for recorder in self.recorders:
            recorder.polled(job, status)
        self._note_unknown(lane, status)
        if job.state is State.FETCHING:  # resumed mid-fetch: fetch again from this status
            await self._fetch(lane, job, status)
            return
        event = _EVENTS.get(status.state)
        fields = _status_fields(status)
        target = advance(job.state, event) if event is not None else job.state
        if event is not None and target in TERMINAL:
            self._finish(job, event, status=status, **fields)
            return
        if event is not None and target is not job.state:
            self.transition(job, event, **fields)
        else:
            for name, value in fields.items():
                setattr(job, name, value)
        await self._after_status(lane, job, status)

    async def _after_status(self, lane: Lane, job: JobRecord, status: Status | None) -> None:
        """Fetch a finished job, record a terminal one, schedule the next poll otherwise."""
        if job.state is State.FETCHING:
            assert status is not None
            await self._fetch(lane, job, status)
        elif job.state in TERMINAL:  # the submit's own reply was final (rare)
            out = self.output.job_dir(job.spec.id)
            if status is not None:
                out.write_status(status_document(status, job))
            out.write_outcome(job, None)
        else:
            self._next_poll(lane, job)

    def _poll_failed(self, lane: Lane, job: JobRecord, exc: ProviderCallError) -> None:
        if exc.kind is ErrorKind.AUTH:
            self._stop(lane, exc)
            self._finish(job, Event.ERROR, error=lane.stopped)
            return
        if exc.kind in (ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED, ErrorKind.BUSY):
            errors = self._poll_errors.get(job.spec.id, 0) + (exc.kind is ErrorKind.TRANSIENT)
            self._poll_errors[job.spec.id] = errors
            if errors < MAX_POLL_ERRORS:
                self._schedule(lane, job, retry_delay(self.retry, errors + 1, self.rng))
                return
            self._finish(job, Event.ERROR, error=f"polling kept failing: {exc}")
            return
        self._finish(job, Event.ERROR, error=str(exc))

    def _note_unknown(self, lane: Lane, status: Status) -> None:
        if status.state is not RemoteState.UNKNOWN:
            return
        raw = status.raw.strip().lower()
        if raw in lane.unknown:
            return
        lane.unknown.add(raw)
        self.notice(
            "provider.unknown_status",
            f"{lane.name}: unknown status {status.raw!r}, treated as still running",
            provider=lane.name,
            status=status.raw,
        )

    async def _timed_out(self, lane: Lane, job: JobRecord) -> None:
        spec = job.spec
        settings = lane.settings
        what = "left running remotely"
        if settings.on_timeout == "cancel" and job.remote is not None:
            try:
                await lane.adapter.cancel(self._http(lane, job), spec, job.remote)
                what = "cancel requested remotely"
            except (ProviderCallError, ProviderResponseError) as exc:
                what = f"remote cancel failed: {exc}"
        if job.state is State.PAUSED and settings.max_paused is not None:
            why = job.reason or job.raw_status or "no reason given"
            error = (
                f"timed out: paused for longer than max_paused "
                f"{format_duration(settings.max_paused)} (pause reason: {why}; {what})"
            )
        else:
            error = f"timed out after {format_duration(spec.timeout)} ({what})"
        self._finish(job, Event.TIMEOUT, error=error)

    # -- fetch -----------------------------------------------------------------------------

    async def _fetch(self, lane: Lane, job: JobRecord, status: Status) -> None:
        spec = job.spec
        out = self.output.job_dir(spec.id)
        out.write_status(status_document(status, job))
        assert job.remote is not None
        try:
            report = await lane.adapter.fetch(self._http(lane, job), spec, job.remote, status, out)
        except ProviderCallError as exc:
            if exc.kind is ErrorKind.GONE:
                error = f"the result is gone (HTTP 410) and cannot be fetched again: {exc}"
                self._finish(job, Event.GONE, error=error, results_ready=False)
            else:
                if exc.kind is ErrorKind.AUTH:
                    self._stop(lane, exc)
                self._finish(job, Event.ERROR, error=f"fetching the result failed: {exc}")
            return
        except (ProviderResponseError, JobFailedError) as exc:
            self._finish(job, Event.ERROR, error=str(exc))
            return
        self._finish(job, Event.FETCHED, report=report, partial=job.partial or report.partial)

    # -- provider-wide stops ---------------------------------------------------------------

    def _stop(self, lane: Lane, exc: ProviderCallError) -> None:
        """The key was refused: nothing more goes to this provider."""
        if lane.stopped is not None:
            return
        var = lane.settings.api_key_var or lane.adapter.info.api_key_env
        status = f"HTTP {exc.status_code}" if exc.status_code else "refused"
        lane.stopped = (
            f"{lane.adapter.info.title}: the API key in ${var} was refused ({status}); "
            f"stopped all {lane.name} jobs"
        )
        lane.gate.stopped = lane.stopped  # requests already waiting for a slot stay unsent
        # jobs already taken by a worker are skipped too: their sends stay blocked
        skipped = self._skip_pending(lane, lane.stopped) + self._submitting(lane)
        failed = 0
        while lane.polls:
            job = heapq.heappop(lane.polls)[2]
            if job.state in _IN_FLIGHT:
                self._finish(job, Event.ERROR, error=lane.stopped)
                failed += 1
        self.notice(
            "provider.stopped",
            f"{lane.stopped}: {skipped} skipped, {failed} in flight marked failed",
            provider=lane.name,
            reason="auth",
        )
        lane.notify_all()

    def _out_of_credits(self, lane: Lane, exc: ProviderCallError) -> None:
        if lane.no_credits is not None:
            return
        detail = " ".join(
            part
            for part in (f"HTTP {exc.status_code}" if exc.status_code else "", exc.code)
            if part
        )
        lane.no_credits = (
            f"{lane.adapter.info.title}: out of credits ({detail or 'refused'}); "
            f"stopped submitting {lane.name} jobs"
        )
        skipped = self._skip_pending(lane, lane.no_credits)
        self.notice(
            "provider.stopped",
            f"{lane.no_credits}: {skipped} not submitted, jobs already running continue",
            provider=lane.name,
            reason="credits",
        )
        lane.notify_all()

    def _submitting(self, lane: Lane) -> int:
        return sum(
            1
            for job in self.records.values()
            if job.state is State.SUBMITTING and job.spec.provider == lane.name
        )

    def _skip_pending(self, lane: Lane, reason: str) -> int:
        skipped = 0
        while lane.deferred:
            self._finish(heapq.heappop(lane.deferred)[2], Event.SKIP, error=reason)
            skipped += 1
        while lane.pending:
            self._finish(lane.pending.popleft(), Event.SKIP, error=reason)
            skipped += 1
        return skipped


_AMBIGUOUS = "the submit may or may not have been accepted; not re-sent"
_AMBIGUOUS_RESUMED = (
    "the batch stopped while this job was being submitted and the provider cannot tell "
    "whether it was accepted; not re-sent (runner resume --resubmit-unknown re-sends it)"
)
_CANCELLED_UNSENT = "not submitted: the batch was cancelled (runner cancel)"
_CANCELLED_BY_USER = "cancelled remotely by runner cancel"
_CANCELLED_ON_INTERRUPT = "cancelled remotely on interrupt (on_interrupt: cancel)"


class _MarkSent:
    """The transport of one submit attempt: journals "sent" before the first request that
    can change anything (not GET/HEAD) leaves, after the gate has granted its slot."""

    def __init__(self, inner: Transport, engine: Engine, job: JobRecord) -> None:
        self._inner = inner
        self._engine = engine
        self._job = job
        self._marked = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Reply:
        if not self._marked and method.upper() not in ("GET", "HEAD"):
            self._marked = True
            self._engine.mark_sent(self._job)
        return await self._inner.request(method, url, headers=headers, params=params, json=json)

    async def download(
        self, url: str, dest: Path, *, headers: Mapping[str, str], max_bytes: int | None
    ) -> tuple[Reply, int]:
        return await self._inner.download(url, dest, headers=headers, max_bytes=max_bytes)

    async def aclose(self) -> None:
        """Owned by the provider's client, not by one submit."""


def _status_fields(status: Status) -> dict[str, Any]:
    return {
        "raw_status": status.raw,
        "reason": status.reason,
        "progress": status.progress,
        "partial": status.partial,
        "results_ready": status.results_ready,
    }


REMOTE_ID = "<remote id>"


def status_document(status: Status, job: JobRecord) -> Any:
    """status.json: the provider's final status payload with the job's remote ids (its id
    and the ids in its RemoteRef, e.g. the Lobstr squid) replaced by `<remote id>`, inside
    any string. Remote ids live in batch.json, the journal and the log; jobs/ stays the
    same between two runs that got the same answers."""
    ref = job.remote
    ids = [] if ref is None else [ref.id, *(v for v in ref.extra.values() if isinstance(v, str))]
    return scrub(
        dict(status.payload), sorted({i for i in ids if len(i) >= 4}, key=len, reverse=True)
    )


def scrub(value: Any, ids: Sequence[str]) -> Any:
    """`value` with every occurrence of each of `ids` in its strings (keys too) replaced."""
    if not ids:
        return value
    if isinstance(value, str):
        for remote_id in ids:
            if remote_id in value:
                value = value.replace(remote_id, REMOTE_ID)
        return value
    if isinstance(value, Mapping):
        return {scrub(k, ids): scrub(v, ids) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, ids) for v in value]
    return value
