"""Continuing and stopping a batch: resume what an earlier run left, tidy up after a signal,
`runner cancel`, and the durable "sent" mark that tells a never-sent submit (safe to send)
from one the provider may have accepted (never re-sent blindly)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import anyio

from runner.engine.lanes import Lane
from runner.errors import NotCancellableError, ProviderCallError, ProviderResponseError
from runner.http.client import ProviderClient, Transport
from runner.lifecycle import Event, JobRecord, State
from runner.providers.base import Reply
from runner.remote import FetchReport, Status


class Outputs(Protocol):
    def job_dir(self, job_id: str) -> Resettable: ...


class Resettable(Protocol):
    def reset(self) -> None:
        """Remove whatever an interrupted fetch left."""
        ...


class Engine(Protocol):
    """What recovery asks of the engine (runner.engine.engine.Engine is the one): recovery sits
    below the engine, so the engine's module is never imported here."""

    @property
    def lanes(self) -> Mapping[str, Lane]: ...

    @property
    def records(self) -> Mapping[str, JobRecord]: ...

    @property
    def output(self) -> Outputs: ...

    @property
    def interrupted(self) -> str | None: ...

    @property
    def cancel_failures(self) -> list[str]: ...

    @property
    def wall(self) -> Callable[[], float]:
        """Wall-clock seconds, for records only (injected in tests)."""
        ...

    def transition(self, job: JobRecord, event: Event, **changes: Any) -> State: ...

    def finish(
        self,
        job: JobRecord,
        event: Event,
        *,
        report: FetchReport | None = None,
        status: Status | None = None,
        **changes: Any,
    ) -> None: ...

    async def reconcile(self, lane: Lane, job: JobRecord, since: float, error: str) -> State: ...

    def schedule(self, lane: Lane, job: JobRecord, delay: float) -> None: ...

    def start_timeout(self, lane: Lane, job: JobRecord, seconds: float) -> None: ...

    def client_for(self, lane: Lane, job: JobRecord) -> ProviderClient: ...

    def noted(self, job: JobRecord, key: str) -> None: ...

    def notice(self, event: str, message: str, **fields: Any) -> None: ...


SENT_NOTE = "runner.sent"  # the engine's own durable note: a submit attempt left the process

AMBIGUOUS_RESUMED = (
    "the batch stopped while this job was being submitted and the provider cannot tell "
    "whether it was accepted; not re-sent (runner resume --resubmit-unknown re-sends it)"
)
CANCELLED_UNSENT = "not submitted: the batch was cancelled (runner cancel)"
CANCELLED_BY_USER = "cancelled remotely by runner cancel"
CANCELLED_ON_INTERRUPT = "cancelled remotely on interrupt (on_interrupt: cancel)"
SHOWN_IDS = 5  # job ids named in a "not cancelled" notice; the log lists them all


# -- the sent mark ---------------------------------------------------------------------------


def was_sent(job: JobRecord) -> bool:
    """Did a request of the job's current submit attempt leave the process?"""
    sent = job.notes.get(SENT_NOTE)
    return isinstance(sent, Mapping) and sent.get("attempt") == job.attempts


class MarkSent:
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
            job = self._job
            job.notes[SENT_NOTE] = {"attempt": job.attempts, "at": self._engine.wall()}
            self._engine.noted(job, SENT_NOTE)
        return await self._inner.request(method, url, headers=headers, params=params, json=json)

    async def download(
        self, url: str, dest: Path, *, headers: Mapping[str, str], max_bytes: int | None
    ) -> tuple[Reply, int]:
        return await self._inner.download(url, dest, headers=headers, max_bytes=max_bytes)

    async def aclose(self) -> None:
        """Owned by the provider's client, not by one submit."""


# -- resume ----------------------------------------------------------------------------------


async def resume_jobs(engine: Engine, jobs: Sequence[JobRecord]) -> None:
    """Continue the jobs an earlier run left: re-poll what was submitted, resolve
    interrupted submits, re-fetch what was being fetched, re-send unknowns if asked."""
    async with anyio.create_task_group() as tg:
        for job in jobs:
            tg.start_soon(_resume_job, engine, engine.lanes[job.spec.provider], job)
    for lane in engine.lanes.values():  # back in plan order
        lane.pending = deque(sorted(lane.pending, key=lambda job: job.spec.index))


async def _resume_job(engine: Engine, lane: Lane, job: JobRecord) -> None:
    if job.state is State.SUBMIT_UNKNOWN:  # --resubmit-unknown: the user accepts the risk
        engine.transition(job, Event.RESUBMIT, error=None)
        lane.pending.append(job)
        return
    if job.state is State.SUBMITTING:
        if await resolve_submitting(engine, lane, job) is State.PLANNED:
            lane.pending.append(job)
        return
    if job.state is State.FETCHING:
        engine.output.job_dir(job.spec.id).reset()  # whatever a cut-off fetch left
    left = job.spec.timeout
    if job.submitted_at is not None:
        # Wall time is all two runs share. A clock stepped back since the submit must not
        # lengthen the timeout (negative elapsed); one stepped forward can't be told from
        # time really gone by: the job times out on its first turn, as any overdue job.
        left -= max(0.0, engine.wall() - job.submitted_at)
    engine.start_timeout(lane, job, left)
    engine.schedule(lane, job, 0.0)


async def resolve_submitting(engine: Engine, lane: Lane, job: JobRecord) -> State:
    """A job the journal left in `submitting`: the process died (or was stopped) while
    its submit was under way. Nothing sent → planned again. Sent → ask the provider
    (reconcile): found → polled from now on; provably absent → planned again; else
    `submit_unknown`, never re-sent blindly."""
    if not was_sent(job):
        return engine.transition(job, Event.DEFERRED)  # not one byte of it left us
    since = float(job.notes[SENT_NOTE].get("at") or 0.0)
    state = await engine.reconcile(lane, job, since, AMBIGUOUS_RESUMED)
    if state is State.QUEUED and engine.interrupted is None:
        engine.schedule(lane, job, 0.0)
    return state


# -- interrupt and cancel --------------------------------------------------------------------


class Cancel(StrEnum):
    """What asking a provider to cancel one remote job came to."""

    ACCEPTED = "accepted"  # a cancel request was sent and the provider accepted it
    UNSUPPORTED = "unsupported"  # the provider cannot cancel it: nothing sent, it runs on
    FAILED = "failed"  # sent (or tried) and refused, or it failed on the way


async def request_cancel(engine: Engine, lane: Lane, job: JobRecord) -> tuple[Cancel, str]:
    """Ask the provider to cancel `job`'s remote job: (outcome, detail). The detail is the
    adapter's reason for UNSUPPORTED, the error for FAILED, empty for ACCEPTED."""
    assert job.remote is not None
    try:
        await lane.adapter.cancel(engine.client_for(lane, job), job.spec, job.remote)
    except NotCancellableError as exc:
        return Cancel.UNSUPPORTED, str(exc)
    except (ProviderCallError, ProviderResponseError) as exc:
        return Cancel.FAILED, str(exc)
    return Cancel.ACCEPTED, ""


async def settle_interrupt(engine: Engine) -> None:
    """Tidy the journal after a stop, then apply each provider's `on_interrupt`."""
    for job in engine.records.values():
        if job.state is State.SUBMITTING and not was_sent(job):
            engine.transition(job, Event.DEFERRED)  # never sent: simply planned again
    lanes = [lane for lane in engine.lanes.values() if lane.settings.on_interrupt == "cancel"]
    await cancel_remote(engine, lanes, CANCELLED_ON_INTERRUPT, detach=False)


async def cancel_batch(engine: Engine, resumed: Sequence[JobRecord]) -> None:
    """`runner cancel`: submit nothing more and cancel every remote job still active.

    Jobs never sent are skipped; an interrupted submit is reconciled first (and cancelled
    if found). Jobs already finished remotely (`fetching`) are left for `runner resume`.
    A job its provider cannot cancel ends `detached`: it runs on, and says so."""
    async with anyio.create_task_group() as tg:
        for job in resumed:
            if job.state is State.SUBMITTING:
                tg.start_soon(resolve_submitting, engine, engine.lanes[job.spec.provider], job)
    for lane in engine.lanes.values():
        lane.pending.clear()
    for job in engine.records.values():
        if job.state is State.PLANNED:
            engine.finish(job, Event.SKIP, error=CANCELLED_UNSENT)
    await cancel_remote(engine, list(engine.lanes.values()), CANCELLED_BY_USER, detach=True)


async def cancel_remote(engine: Engine, lanes: Sequence[Lane], why: str, *, detach: bool) -> None:
    """Cancel every remote job still active on `lanes` (concurrently, through the gate).

    A job is `cancelled` only when its provider accepted the cancel. One it cannot cancel
    ends `detached` with the reason (`detach`, for `runner cancel`), or keeps its state so
    `runner resume` can still follow it (on interrupt), named in one notice per provider."""
    kept: dict[tuple[str, str], list[str]] = {}  # (provider, reason) → job ids left running

    async def cancel(lane: Lane, job: JobRecord) -> None:
        outcome, detail = await request_cancel(engine, lane, job)
        if outcome is Cancel.ACCEPTED:
            engine.finish(job, Event.CANCEL, error=why)
        elif outcome is Cancel.FAILED:
            job.error = f"the remote cancel failed: {detail}"
            engine.cancel_failures.append(f"{job.spec.id}: {job.error}")
        elif detach:
            engine.finish(job, Event.DETACH, error=detail)
        else:
            kept.setdefault((lane.name, detail), []).append(job.spec.id)

    async with anyio.create_task_group() as tg:
        for lane in lanes:
            for job in list(engine.records.values()):
                if job.spec.provider == lane.name and job.state.remote:
                    tg.start_soon(cancel, lane, job)
    for (provider, reason), ids in sorted(kept.items()):
        ids.sort(key=lambda job_id: engine.records[job_id].spec.index)
        message = not_cancelled_notice(provider, ids, reason)
        engine.notice("provider.no_cancel", message, provider=provider, job_ids=ids)


def not_cancelled_notice(provider: str, ids: Sequence[str], reason: str) -> str:
    """`spidra: s-1, s-2 not cancelled on interrupt: provider has no cancel: ...`."""
    named = ", ".join(ids[:SHOWN_IDS])
    if len(ids) > SHOWN_IDS:
        named += f" and {len(ids) - SHOWN_IDS} more"
    return f"{provider}: {named} not cancelled on interrupt: {reason}"
