"""The engine: drives every job from planned to a terminal state, inside every limit.

Per provider a fixed pool of worker tasks (≈ its connection pool) takes polls and submits
from that provider's Lane (runner.engine.lanes); no task exists per job, so memory follows
the jobs in flight (docs/engineering.md#no-task-per-job). Resume, interrupt and cancel live
in runner.engine.recovery. Every state change goes through `Engine.transition`, which asks
`lifecycle.advance` and then tells every Recorder synchronously, before anything else
happens to the job (the journal commits a remote id the moment it is known). What a failed
request means is read from one table (runner.engine.outcomes); a provider that stops
answering is paused and probed (its Gate's Outage).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio

from runner.durations import format_duration
from runner.engine import polling, recovery
from runner.engine.budget import Refusal, Spending
from runner.engine.lanes import Lane
from runner.engine.outcomes import (
    MAX_SUBMIT_ATTEMPTS,
    Decision,
    Delay,
    Job,
    Phase,
    Provider,
    classify,
    counts_error,
    decide,
)
from runner.errors import (
    JobFailedError,
    NotSubmittedError,
    ProviderCallError,
    ProviderResponseError,
)
from runner.http.backoff import DEFAULT_RETRY, RetryPolicy, retry_delay
from runner.http.client import ProviderClient
from runner.http.limits import Change
from runner.lifecycle import TERMINAL, Event, JobRecord, Recorder, State, advance
from runner.plan import Plan
from runner.providers.base import Adapter
from runner.remote import FetchReport, RemoteState, ResultSink, Status

INTERRUPT_GRACE = 3.0  # seconds work already under way may take to finish after a signal
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
    """A job's results directory (runner.store.results.JobDir)."""

    def write_status(self, payload: Any) -> None: ...

    def write_outcome(self, record: JobRecord, report: FetchReport | None = None) -> None: ...

    def reset(self) -> None:
        """Remove whatever an interrupted fetch left (before fetching again on resume)."""
        ...


class Output(Protocol):
    """The batch's results directory (runner.store.results.BatchDir)."""

    def job_dir(self, job_id: str) -> JobOutput: ...


Notify = Callable[[str, Mapping[str, Any]], None]
# A finished job's files against its expectations: None, or why it failed (runner.batch.expect).
Judge = Callable[[JobRecord, FetchReport], str | None]


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
        wall: Callable[[], float] = time.time,
        judge: Judge | None = None,
        budget: Spending | None = None,
    ) -> None:
        self.plan = plan
        self.judge = judge
        self.budget = budget if budget is not None and budget.active else None
        self.output = output
        self.recorders = list(recorders)
        self.rng = rng or random.Random(0)
        self.retry = retry
        self._notify = notify
        # Unix time, for records only (timestamps, "unreachable since"): a step of the wall
        # clock (NTP, suspend, a migrated VM) must move no deadline and no poll.
        self.wall = wall
        self.notices: list[str] = []
        self.records: dict[str, JobRecord] = {}
        self.counts: Counter[State] = Counter()
        self._deadlines: dict[str, float] = {}  # job id → monotonic timeout instant
        self._paused_since: dict[str, float] = {}  # job id → monotonic instant it paused
        self._poll_errors: dict[str, int] = {}
        self.interrupted: str | None = None  # why the run stopped early (a signal)
        self.cancel_failures: list[str] = []  # remote cancels that failed (interrupt, cancel)
        self._scope: anyio.CancelScope | None = None
        self.lanes: dict[str, Lane] = {}
        # Per provider at the end of run(): each limit's origin and final value (Gate.report).
        self.limits: dict[str, dict[str, dict[str, Any]]] = {}
        for name, client in clients.items():
            made = self.lanes[name] = Lane(plan.providers[name], adapters[name], client)
            made.deadline_of = functools.partial(self._deadline, made)
            made.gate.on_reachable = functools.partial(self._reachable, made)
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
        if state not in TERMINAL:
            job.finished_at = None  # submit_unknown reconciled or re-sent: not finished yet
        elif previous not in TERMINAL:
            job.finished_at = self.wall()
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

    def start_timeout(self, lane: Lane, job: JobRecord, seconds: float) -> None:
        """The job times out `seconds` from now (a paused job's pause clock starts now)."""
        now = lane.gate.clock.now()
        self._deadlines[job.spec.id] = now + seconds
        if job.state is State.PAUSED:
            self._paused_since[job.spec.id] = now

    def _deadline(self, lane: Lane, job: JobRecord) -> float:
        """When the job times out: its timeout, or while paused, the end of `max_paused`."""
        since = self._paused_since.get(job.spec.id)
        if since is None:
            return self._deadlines.get(job.spec.id, math.inf)
        limit = lane.settings.max_paused
        return math.inf if limit is None else since + limit

    def client_for(self, lane: Lane, job: JobRecord) -> ProviderClient:
        """The provider's client as seen by one job, carrying that job's durable notes."""
        return lane.client.for_job(
            job.spec.id, notes=job.notes, on_note=lambda key: self.noted(job, key)
        )

    def noted(self, job: JobRecord, key: str) -> None:
        for recorder in self.recorders:
            recorder.noted(job, key)

    def notice(self, event: str, message: str, **fields: Any) -> None:
        """A provider-level event for the user (one line) and the log."""
        self.notices.append(message)
        if self._notify is not None:
            self._notify(event, {"message": message, **fields})

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> EngineResult:
        """Drive every job to a terminal state, or until `interrupt()`; then, per provider
        `on_interrupt`, cancel its remote jobs or leave them for `runner resume`."""
        self._skip_orphans()
        with anyio.CancelScope() as scope:
            self._scope = scope
            await recovery.resume_jobs(self, self._resumed)
            if self.interrupted is None:
                async with anyio.create_task_group() as tg:
                    for lane in self.lanes.values():
                        for _ in range(max(1, lane.gate.pool_size)):
                            tg.start_soon(self._worker, lane)
        self._scope = None
        if self.interrupted is not None:
            await recovery.settle_interrupt(self)
        self.limits = {name: lane.gate.report() for name, lane in sorted(self.lanes.items())}
        return self.result()

    def _skip_orphans(self) -> None:
        for record, provider in self._orphans:
            self.finish(
                record, Event.SKIP, error=f"runner has no adapter for provider {provider!r} yet"
            )

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
        self._skip_orphans()
        await recovery.cancel_batch(self, self._resumed)
        return self.result()

    async def _worker(self, lane: Lane) -> None:
        while True:
            work = await lane.next_work()
            if work is None:
                return
            kind, job = work
            lane.busy += 1
            try:
                if job is None:
                    await self._probe(lane)
                else:
                    await self._within_timeout(lane, job, kind)
            finally:
                lane.busy -= 1
                lane.end_probe(job)

    async def _within_timeout(self, lane: Lane, job: JobRecord, kind: str) -> None:
        """Submit or poll (and fetch) `job`, cut off at its timeout even mid-request: a
        reply that never ends must not outlive the job, nor hold its provider's slot."""
        now = lane.gate.clock.now()
        left = (now + job.spec.timeout if kind == "submit" else self._deadline(lane, job)) - now
        # A poll already past its deadline is the timeout itself: `_poll` handles it.
        with anyio.move_on_after(left if left > 0 else math.inf) as scope:
            if kind == "poll":
                await self._poll(lane, job)
            else:
                await self._submit(lane, job)
        if not scope.cancelled_caught or self.interrupted is not None or job.state in TERMINAL:
            return
        timeout = format_duration(job.spec.timeout)
        if job.state is State.SUBMITTING and not recovery.was_sent(job):
            self.transition(job, Event.DEFERRED)  # still waiting for a slot: nothing sent
            lane.defer(job, lane.gate.clock.now())
        elif job.state is State.SUBMITTING:
            error = f"{_AMBIGUOUS}: no complete reply to the submit within the job's timeout"
            self.finish(job, Event.AMBIGUOUS, error=f"{error} {timeout}")
        elif job.state is State.FETCHING:
            self.finish(
                job, Event.TIMEOUT, error=f"timed out after {timeout} while fetching the result"
            )
        else:
            await self._timed_out(lane, job, unanswered=True)

    def schedule(self, lane: Lane, job: JobRecord, delay: float) -> None:
        now = lane.gate.clock.now()
        due = min(now + delay, self._deadline(lane, job))
        job.next_poll_at = self.wall() + (due - now)
        lane.push_poll(job, due)

    def _next_poll(self, lane: Lane, job: JobRecord) -> None:
        """The next poll where the status budget buys time (runner.engine.polling)."""
        gate = lane.gate
        rate = gate.status_rate()
        cap = gate.in_flight_cap
        regime = polling.regime(
            submits_waiting=lane.has_submits(),
            free_slots=None if cap is None else cap - gate.jobs_in_flight,
            status_rate=rate,
            first_interval=job.spec.poll.initial,
        )
        budget = polling.Budget(gate.jobs_in_flight, rate, own=gate.status_own())
        delay = lane.tracker.delay(
            job.spec.id,
            job.spec.poll,
            job.polls,
            gate.clock.now(),
            regime,
            budget,
            self.rng,
            job.progress,
        )
        self.schedule(lane, job, delay)

    def finish(
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
        if self.budget is not None and report is not None:
            refusal = self.budget.charge(job.spec.provider, report.outcome)
            if refusal is not None:
                self._capped(refusal)
        lane = self.lanes.get(job.spec.provider)
        if lane is not None:
            lane.tracker.forget(job.spec.id)

    # -- submit ----------------------------------------------------------------------------

    async def _submit(self, lane: Lane, job: JobRecord) -> None:
        spec = job.spec
        if self.budget is not None:
            refusal = self.budget.refuse(job)
            if refusal is not None:
                self.finish(job, Event.SKIP, error=refusal.reason)
                self._capped(refusal, refused=1)
                return
            self.budget.count(job)
        self.transition(job, Event.SUBMIT, attempts=job.attempts + 1)
        since = self.wall()
        http = self.client_for(lane, job)
        http = dataclasses.replace(http, transport=recovery.MarkSent(http.transport, self, job))
        try:
            submitted = await lane.adapter.submit(http, spec)
        except ProviderCallError as exc:
            await self._submit_failed(lane, job, exc, since)
            return
        except ProviderResponseError as exc:  # a 2xx we cannot read: it may exist remotely
            self.finish(job, Event.ERROR, error=str(exc))
            return
        except JobFailedError as exc:  # refused before sending (e.g. unsupported type)
            self.finish(job, Event.REJECTED, error=str(exc))
            return
        self.start_timeout(lane, job, spec.timeout)
        status = submitted.status
        event = _EVENTS.get(status.state, Event.QUEUED) if status else Event.QUEUED
        self.transition(
            job,
            event,
            remote=submitted.ref,
            submitted_at=self.wall(),
            **(_status_fields(status) if status else {}),
        )
        self._accepted(lane, job)
        if status is not None:
            self._note_unknown(lane, status)
        await self._after_status(lane, job, status)

    def _accepted(self, lane: Lane, job: JobRecord) -> None:
        """The provider accepted a job: a learned in-flight cap may grow (wake a worker to
        use it), and the job's age starts for the poll policy."""
        now = lane.gate.clock.now()
        lane.tracker.submitted(job.spec.id, now)
        cap = lane.gate.in_flight_cap
        lane.gate.accepted()
        if lane.gate.in_flight_cap != cap and lane.has_submits():
            lane.due_sooner(now)

    async def _submit_failed(
        self, lane: Lane, job: JobRecord, exc: ProviderCallError, since: float
    ) -> None:
        down = lane.gate.outage.down
        decision = decide(Phase.SUBMIT, classify(exc), attempts=job.attempts, provider_down=down)
        action = decision.job
        if action in (Job.RESEND, Job.WAIT):
            self.transition(job, Event.DEFERRED)
            self._provider_action(lane, decision, exc, probe=False)
            delay = self._delay(lane, decision, exc, job.attempts)
            lane.defer(job, lane.gate.clock.now() + delay)
            return
        self._provider_action(lane, decision, exc, probe=False)
        if action is Job.SKIP:
            auth = decision.provider is Provider.STOP_AUTH
            self.finish(job, Event.SKIP, error=lane.stopped if auth else lane.no_credits)
        elif action is Job.REJECT:
            error = f"not accepted after {job.attempts} attempts: {exc}"
            self.finish(job, Event.REJECTED, error=error if decision.exhausted else str(exc))
        else:
            # Sent, and no proof it was not accepted: never re-send blindly.
            state = await self.reconcile(lane, job, since, f"{_AMBIGUOUS}: {exc}")
            if state is State.PLANNED and job.attempts >= MAX_SUBMIT_ATTEMPTS:
                error = f"{job.attempts} attempts sent, none reached {lane.name}: {exc}"
                self.finish(job, Event.SKIP, error=f"not submitted: {error}")
            elif state is State.PLANNED:
                lane.defer(job, lane.gate.clock.now() + self._backoff(job))
            elif state is State.QUEUED:
                self._next_poll(lane, job)

    async def reconcile(self, lane: Lane, job: JobRecord, since: float, error: str) -> State:
        """A submit that may have been accepted: ask the provider (`adapter.reconcile`).
        Found → `queued`, polled from now on; provably absent (NotSubmittedError) →
        `planned`, safe to send again; no answer → `submit_unknown` with `error`."""
        try:
            ref = await lane.adapter.reconcile(self.client_for(lane, job), job.spec, since)
        except NotSubmittedError:
            return self.transition(job, Event.DEFERRED)
        except (ProviderCallError, ProviderResponseError):
            ref = None
        if ref is None:
            self.finish(job, Event.AMBIGUOUS, error=error)
            return job.state
        self.transition(job, Event.AMBIGUOUS, error=error)
        self.start_timeout(lane, job, job.spec.timeout)
        lane.tracker.submitted(job.spec.id, lane.gate.clock.now())
        return self.transition(job, Event.RECONCILED, remote=ref, submitted_at=since, error=None)

    def _backoff(self, job: JobRecord) -> float:
        return retry_delay(self.retry, job.attempts, self.rng)

    def _delay(self, lane: Lane, decision: Decision, exc: ProviderCallError, tries: int) -> float:
        """Seconds until the next try (`tries`: of this job so far, for the backoff)."""
        delay = decision.delay
        if delay is Delay.HINT and exc.retry_after is not None:
            return exc.retry_after
        if delay is Delay.SLOT and lane.gate.jobs_in_flight:
            return 0.0  # first in line for the slot the next finished job frees
        if delay in (Delay.BACKOFF, Delay.HINT, Delay.SLOT):
            return retry_delay(self.retry, max(1, tries), self.rng)
        return 0.0  # NONE, or PROVIDER: the lane holds it until the provider answers

    # -- poll ------------------------------------------------------------------------------

    async def _poll(self, lane: Lane, job: JobRecord) -> None:
        spec = job.spec
        if job.state not in _IN_FLIGHT | {State.FETCHING}:
            return
        if lane.stopped is not None:  # taken from the heap just before the stop
            self.finish(job, Event.ERROR, error=lane.stopped)
            return
        if lane.gate.clock.now() >= self._deadline(lane, job):
            await self._timed_out(lane, job)
            return
        assert job.remote is not None
        sent = lane.gate.clock.now()
        try:
            status = await lane.adapter.poll(self.client_for(lane, job), spec, job.remote)
        except ProviderCallError as exc:
            self._poll_failed(lane, job, exc)
            return
        except ProviderResponseError as exc:
            self.finish(job, Event.ERROR, error=str(exc))
            return
        if job.state is not State.FETCHING:  # a failing fetch keeps its count
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
        if target in TERMINAL or target is State.FETCHING:
            lane.tracker.finished(spec.id, lane.gate.clock.now())
        else:
            lane.tracker.polled(spec.id, sent)
        if event is not None and target in TERMINAL:
            self.finish(job, event, status=status, **fields)
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
        decision = self._decide_and_count(lane, job, Phase.POLL, exc)
        if decision.job is Job.FAIL:
            error = f"polling kept failing: {exc}" if decision.exhausted else str(exc)
            stopped = decision.provider is Provider.STOP_AUTH and lane.stopped
            self.finish(job, Event.ERROR, error=stopped or error)
            return
        errors = self._poll_errors.get(job.spec.id, 0)
        self.schedule(lane, job, self._delay(lane, decision, exc, errors))

    def _decide_and_count(
        self, lane: Lane, job: JobRecord, phase: Phase, exc: ProviderCallError
    ) -> Decision:
        """The decision for a failed poll or fetch; spends one of the job's errors when it
        says so, and acts on the provider."""
        down = lane.gate.outage.down
        errors = self._poll_errors.get(job.spec.id, 0)
        decision = decide(phase, classify(exc), errors=errors, provider_down=down)
        if counts_error(decision, provider_down=down):
            self._poll_errors[job.spec.id] = errors + 1
        self._provider_action(lane, decision, exc, probe=lane.probe_job is job)
        return decision

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

    async def _timed_out(self, lane: Lane, job: JobRecord, *, unanswered: bool = False) -> None:
        spec = job.spec
        settings = lane.settings
        what = "left running remotely"
        if settings.on_timeout == "cancel" and job.state.remote:  # not one already finished
            outcome, detail = await recovery.request_cancel(self, lane, job)
            what = {
                recovery.Cancel.ACCEPTED: "cancel requested remotely",
                recovery.Cancel.UNSUPPORTED: detail,  # the provider has no cancel: it runs on
                recovery.Cancel.FAILED: f"remote cancel failed: {detail}",
            }[outcome]
        if job.state is State.PAUSED and settings.max_paused is not None:
            why = job.reason or job.raw_status or "no reason given"
            error = (
                f"timed out: paused for longer than max_paused "
                f"{format_duration(settings.max_paused)} (pause reason: {why}; {what})"
            )
        else:
            during = " with a request still unanswered" if unanswered else ""
            error = f"timed out after {format_duration(spec.timeout)}{during} ({what})"
        self.finish(job, Event.TIMEOUT, error=error)

    # -- fetch -----------------------------------------------------------------------------

    async def _fetch(self, lane: Lane, job: JobRecord, status: Status) -> None:
        spec = job.spec
        out = self.output.job_dir(spec.id)
        out.write_status(status_document(status, job))
        assert job.remote is not None
        try:
            report = await lane.adapter.fetch(
                self.client_for(lane, job), spec, job.remote, status, out
            )
        except ProviderCallError as exc:
            decision = self._decide_and_count(lane, job, Phase.FETCH, exc)
            if decision.job is Job.EXPIRE:
                error = f"the result is gone (HTTP 410) and cannot be fetched again: {exc}"
                self.finish(job, Event.GONE, error=error, results_ready=False)
            elif decision.job is Job.FAIL:
                self.finish(job, Event.ERROR, error=f"fetching the result failed: {exc}")
            else:  # poll and fetch it again, from an empty directory
                out.reset()
                errors = self._poll_errors.get(spec.id, 0)
                self.schedule(lane, job, self._delay(lane, decision, exc, errors))
            return
        except (ProviderResponseError, JobFailedError) as exc:
            self.finish(job, Event.ERROR, error=str(exc))
            return
        partial = job.partial or report.partial
        verdict = self.judge(job, report) if self.judge is not None else None
        if verdict is not None:  # finished remotely, but not what was expected: files kept
            self.finish(job, Event.ERROR, report=report, partial=partial, error=verdict)
            return
        self.finish(job, Event.FETCHED, report=report, partial=partial)

    # -- provider-wide: stops and outages --------------------------------------------------

    def _provider_action(
        self, lane: Lane, decision: Decision, exc: ProviderCallError, *, probe: bool
    ) -> None:
        action = decision.provider
        if action is Provider.STOP_AUTH:
            self._stop(lane, exc)
        elif action is Provider.STOP_CREDITS:
            self._out_of_credits(lane, exc)
        elif action is Provider.LOWER_CAP:
            # The provider's concurrency is below what we allowed: learn it.
            lane.gate.too_many()
        elif action is Provider.DOWN:
            reason = exc.network or (f"HTTP {exc.status_code}" if exc.status_code else "no answer")
            self._unanswered(lane, reason, probe=probe)

    async def _probe(self, lane: Lane) -> None:
        """The bare probe of a provider that is down (only submits wait for it)."""
        reason = await lane.client.probe()
        if reason is not None:
            self._unanswered(lane, reason, probe=True)

    def _unanswered(self, lane: Lane, reason: str, *, probe: bool) -> None:
        """A request to the provider got no usable answer: its outage state moves on."""
        outage = lane.gate.outage
        now = lane.gate.clock.now()
        change = outage.failed(now, reason, probe=probe)
        if change is Change.GIVE_UP:
            self._give_up(lane, reason)
        elif change is Change.OUTAGE:
            lane.announced = True
            since = self.wall()
            clock = datetime.fromtimestamp(since, UTC).strftime("%H:%M:%SZ")
            wait = format_duration(outage.next_probe_at - now)
            self.notice(
                "provider.unreachable",
                f"{lane.name} unreachable since {clock} ({reason}); next try in {wait}",
                provider=lane.name,
                since=datetime.fromtimestamp(since, UTC).isoformat().replace("+00:00", "Z"),
                reason=reason,
                next_try_seconds=round(outage.next_probe_at - now, 3),
            )
        lane.due_sooner(outage.next_probe_at)

    def _reachable(self, lane: Lane, lasted: float) -> None:
        """The provider answered again (Gate.on_reachable): its held work goes on."""
        if lane.announced:
            lane.announced = False
            self.notice(
                "provider.reachable",
                f"{lane.name} reachable again after {format_duration(lasted)}",
                provider=lane.name,
                down_seconds=round(lasted, 3),
            )
        lane.notify_all()

    def _give_up(self, lane: Lane, reason: str) -> None:
        """A provider that never answered in this run (a wrong base URL, no network): stop
        its lane within seconds, with one line naming what to fix. Its jobs stay as they are
        (planned, or in flight in the journal) for `runner resume`."""
        if lane.unreachable is not None:
            return
        host = urlsplit(lane.settings.base_url).netloc or lane.settings.base_url
        left = sum(
            1
            for job in self.records.values()
            if job.spec.provider == lane.name and not job.state.terminal
        )
        tries = lane.gate.outage.failures
        lane.unreachable = (
            f"{lane.adapter.info.title}: no answer from {host} ({reason}) in {tries} tries; "
            f"stopped all {lane.name} jobs, {left} left for runner resume; "
            f"check providers.{lane.name}.base_url in {self.plan.source}"
        )
        lane.done = True
        self.notice(
            "provider.stopped",
            lane.unreachable,
            provider=lane.name,
            reason="unreachable",
            host=host,
        )
        lane.notify_all()

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
        for job in lane.drain_polls():
            if job.state in _IN_FLIGHT:
                self.finish(job, Event.ERROR, error=lane.stopped)
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

    def _capped(self, refusal: Refusal, *, refused: int = 0) -> None:
        """A spend cap was reached: no more submits where it applies (its provider, or all
        for the batch's cap); jobs not yet sent are skipped, running ones finish."""
        assert self.budget is not None
        lanes = [
            lane
            for lane in self.lanes.values()
            if refusal.provider is None or lane.name == refusal.provider
        ]
        skipped = refused  # the job whose submit met the cap, if any
        for lane in lanes:
            lane.capped = lane.capped or refusal.reason
            skipped += self._skip_pending(lane, refusal.reason)
            lane.notify_all()
        if refusal.provider in self.budget.announced:
            return
        self.budget.announced.add(refusal.provider)
        where = refusal.provider or "batch"
        self.notice(
            "budget.reached",
            f"{refusal.reason.removesuffix('; not submitted')}: {skipped} not submitted, "
            "jobs already running continue",
            provider=where,
            reason="budget",
        )

    def _submitting(self, lane: Lane) -> int:
        return sum(
            1
            for job in self.records.values()
            if job.state is State.SUBMITTING and job.spec.provider == lane.name
        )

    def _skip_pending(self, lane: Lane, reason: str) -> int:
        unsent = lane.drain_unsent()
        for job in unsent:
            self.finish(job, Event.SKIP, error=reason)
        return len(unsent)


_AMBIGUOUS = "the submit may or may not have been accepted; not re-sent"


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
