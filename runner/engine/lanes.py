"""One provider's share of the engine: its queues, and how its workers find the next work.

Polls wait in a heap by due time (the most overdue first), submits in plan order (deferred
submits, each with a not-before instant, go first). Idle workers each wait on their own
event; one of them, the timer, sleeps until the earliest due work
(docs/engineering.md#no-task-per-job). While the provider is unreachable (its Gate's Outage) only
one probe goes out at a time.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import anyio

from runner.engine.polling import Tracker
from runner.http.client import ProviderClient
from runner.http.limits import Gate
from runner.lifecycle import JobRecord
from runner.plan import ProviderSettings
from runner.providers.base import Adapter

Kind = Literal["poll", "submit", "probe"]
Work = tuple[Kind, JobRecord | None]  # a "probe" has no job: GET the provider's base URL
_Entry = tuple[float, int, JobRecord]  # (due or not-before, insertion order, job)


@dataclass(slots=True)
class Lane:
    """One provider's client, queues, stop flags and idle workers."""

    settings: ProviderSettings
    adapter: Adapter
    client: ProviderClient
    pending: deque[JobRecord] = field(default_factory=deque)  # never sent, plan order
    deferred: list[_Entry] = field(default_factory=list)  # not accepted yet: heap, not before
    polls: list[_Entry] = field(default_factory=list)  # heap, due time
    busy: int = 0  # workers holding a piece of work
    done: bool = False
    stopped: str | None = None  # the key was refused: nothing more is sent
    no_credits: str | None = None  # credits ran out: no more submits
    capped: str | None = None  # a spend cap (budget) was reached: no more submits
    unreachable: str | None = None  # it never answered: the lane stopped, jobs left as they are
    probing: bool = False  # the one probe allowed while the provider is down is out
    probe_job: JobRecord | None = None  # the job whose poll is that probe (None: a bare GET)
    announced: bool = False  # the current outage was reported (its end will be too)
    # When a job times out (the engine's deadline): a poll held by an outage still ends then.
    deadline_of: Callable[[JobRecord], float] = lambda job: math.inf
    idle: deque[anyio.Event] = field(default_factory=deque)  # workers waiting for work
    timer: anyio.Event | None = None  # the one idle worker that sleeps until `timer_at`
    timer_at: float = math.inf
    unknown: set[str] = field(default_factory=set)  # raw statuses already reported
    tracker: Tracker = field(default_factory=Tracker)  # ages and durations, for the polls
    _order: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def gate(self) -> Gate:
        return self.client.gate

    def may_submit(self) -> bool:
        return (
            self.stopped is None
            and self.no_credits is None
            and self.unreachable is None
            and self.capped is None
        )

    # -- queueing ----------------------------------------------------------------------------

    def push_poll(self, job: JobRecord, due: float) -> None:
        """Poll `job` at `due` (gate clock)."""
        heapq.heappush(self.polls, (due, next(self._order), job))
        self.due_sooner(due)

    def defer(self, job: JobRecord, not_before: float) -> None:
        """Submit `job` again, ahead of the never-sent jobs, not before `not_before`."""
        heapq.heappush(self.deferred, (not_before, next(self._order), job))
        self.due_sooner(not_before)

    def drain_unsent(self) -> list[JobRecord]:
        """Take every job still waiting to be submitted (deferred first, then plan order)."""
        jobs = [heapq.heappop(self.deferred)[2] for _ in range(len(self.deferred))]
        jobs.extend(self.pending)
        self.pending.clear()
        return jobs

    def drain_polls(self) -> list[JobRecord]:
        """Take every job waiting for its next poll (most overdue first)."""
        return [heapq.heappop(self.polls)[2] for _ in range(len(self.polls))]

    def has_submits(self) -> bool:
        return self.may_submit() and bool(self.pending or self.deferred)

    def take(self, now: float) -> Work | None:
        """The work due at `now`: a due poll first, then a submit the gate allows."""
        if self.gate.outage.down:
            return self._take_while_down(now)
        if self.polls and self.polls[0][0] <= now:
            return "poll", heapq.heappop(self.polls)[2]
        if self.may_submit() and self.gate.can_submit():
            if self.deferred and self.deferred[0][0] <= now:
                return "submit", heapq.heappop(self.deferred)[2]
            if self.pending and not self.deferred:
                return "submit", self.pending.popleft()
        return None

    def _take_while_down(self, now: float) -> Work | None:
        """While the provider is down: a held poll whose job has timed out (the engine
        ends it without a request), else, when it is time, the one probe: the most overdue
        poll, or a bare GET when only submits wait (a POST is never a probe: it could act
        twice). Nothing else is sent."""
        for i, (_, _, job) in enumerate(self.polls):
            if self.deadline_of(job) <= now:
                self.polls[i] = self.polls[-1]
                self.polls.pop()
                heapq.heapify(self.polls)
                return "poll", job
        if self.probing or now < self.gate.outage.next_probe_at:
            return None
        if self.polls:
            job = heapq.heappop(self.polls)[2]
            self.probing, self.probe_job = True, job
            return "poll", job
        if self.has_submits():
            self.probing, self.probe_job = True, None
            return "probe", None
        return None

    def end_probe(self, job: JobRecord | None) -> None:
        """The work `job` (None: a bare probe) is done; if it was the probe, another may go."""
        if self.probing and self.probe_job is job:
            self.probing, self.probe_job = False, None
            self.due_sooner(self.gate.outage.next_probe_at)  # the timer may sleep past it

    def _wake_at(self) -> float:
        """When there may be work next (gate clock)."""
        if self.gate.outage.down:
            wake_at = min((self.deadline_of(job) for _, _, job in self.polls), default=math.inf)
            if not self.probing and (self.polls or self.has_submits()):
                wake_at = min(wake_at, self.gate.outage.next_probe_at)
            return wake_at
        wake_at = self.polls[0][0] if self.polls else math.inf
        if self.deferred and self.may_submit():
            wake_at = min(wake_at, self.deferred[0][0])
        return wake_at

    # -- workers -----------------------------------------------------------------------------

    async def next_work(self) -> Work | None:
        """The next piece of work for a worker, or None when the provider is finished.

        Idle workers wait on their own event; only one of them (the timer) sleeps until the
        earliest due poll or deferred submit. Waking one worker per change, not all of them,
        keeps the cost per request flat in the pool size (measured in bench_engine).
        """
        clock = self.gate.clock
        while True:
            if self.done:
                return None
            now = clock.now()
            work = self.take(now)
            if work is not None:
                if self.polls or self.has_submits():
                    self.due_sooner(now)  # someone else watches what is left
                return work
            if not self.polls and self.busy == 0 and not self.has_submits():
                self.done = True
                self.notify_all()
                return None
            wake_at = self._wake_at()
            event = anyio.Event()
            timeout = math.inf
            if self.timer is None:
                self.timer, self.timer_at, timeout = event, wake_at, wake_at - now
            self.idle.append(event)
            with anyio.move_on_after(max(0.0, timeout)):
                await event.wait()
            if self.timer is event:
                self.timer, self.timer_at = None, math.inf
            with contextlib.suppress(ValueError):  # still listed unless notify took it
                self.idle.remove(event)

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
