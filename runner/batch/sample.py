"""The canary (`runner run --sample N`): N jobs per (provider, type), chosen by the sha256 of
their ids, run first; the rest only if all of them succeed, else the rest are skipped until
`runner retry` makes the sample succeed.

The choice is recorded in the journal (meta `sample`), so resume and retry keep to it; a
failed canary's held jobs are recorded too (meta `sample_held`) and released from there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import TextIO

from runner.engine.engine import Engine, EngineResult
from runner.lifecycle import Event, JobRecord, State
from runner.plan import Plan
from runner.store.journal import Journal

META = "sample"  # {"n": N, "ids": [...]}: the sample jobs, in plan order
HELD = "sample_held"  # ids skipped because the canary failed (released when it succeeds)
SHOWN = 5  # failed sample jobs named one by one

DriveOnce = Callable[[list[JobRecord] | None], tuple[EngineResult, Engine]]
Control = Callable[[list[JobRecord]], Engine]  # an engine that sends nothing: transitions


def _rank(job_id: str) -> str:
    return hashlib.sha256(job_id.encode("utf-8")).hexdigest()


def choose(plan: Plan, n: int) -> list[str]:
    """The ids of the sample: per (provider, type), the `n` whose sha256 sorts first."""
    groups: dict[tuple[str, str], list[str]] = {}
    for spec in plan.jobs:
        groups.setdefault((spec.provider, spec.type), []).append(spec.id)
    chosen = {job_id for ids in groups.values() for job_id in sorted(ids, key=_rank)[:n]}
    return [spec.id for spec in plan.jobs if spec.id in chosen]


def record(journal: Journal, plan: Plan, n: int) -> list[str]:
    """Choose the sample of `plan` and write it into the batch's journal."""
    ids = choose(plan, n)
    journal.set_meta(META, json.dumps({"n": n, "ids": ids}))
    return ids


def _ids(journal: Journal, key: str) -> list[str]:
    text = journal.meta().get(key)
    if not text:
        return []
    data = json.loads(text)
    ids = data["ids"] if isinstance(data, dict) else data
    return [str(i) for i in ids]


def failures(records: Sequence[JobRecord], sample: set[str]) -> list[JobRecord]:
    """The sample jobs that did not succeed (in plan order)."""
    return [r for r in records if r.spec.id in sample and r.state is not State.SUCCEEDED]


def _describe(record: JobRecord) -> str:
    what = f"{record.spec.id} ({record.spec.provider} {record.spec.type}) {record.state.value}"
    return f"{what}: {record.error}" if record.error else what


def reason_of(failed: Sequence[JobRecord]) -> str:
    """The `error` of every job the canary held back: which sample jobs failed."""
    named = ", ".join(f"{r.spec.id} {r.state.value}" for r in failed[:SHOWN])
    more = f" and {len(failed) - SHOWN} more" if len(failed) > SHOWN else ""
    return f"canary failed: {named}{more}"


def run_phases(
    drive_once: DriveOnce,
    control: Control,
    journal: Journal,
    records: list[JobRecord],
    *,
    stopped: Callable[[], bool],
    stderr: TextIO,
    retry_hint: str | None,
) -> tuple[EngineResult, Engine]:
    """Run a batch that has a sample: the sample (and whatever is already under way)
    first, then, if every sample job succeeded, everything else. A batch without a sample
    is one run."""
    sample = set(_ids(journal, META))
    if not sample:
        return drive_once(records)
    held = set(_ids(journal, HELD))
    if not failures(records, sample):  # the canary passed before: release and go on
        _release(control, journal, records, held)
        return drive_once(records)
    first = [r for r in records if r.spec.id in sample or r.state is not State.PLANNED]
    result, engine = drive_once(first)
    if stopped():  # interrupted: the rest stay planned, `runner resume` goes on
        return result, engine
    failed = failures(records, sample)
    if not failed:
        _release(control, journal, records, held)
        return drive_once(records)
    reason = reason_of(failed)
    ctl = control(records)
    rest = [r for r in records if r.spec.id not in sample and r.state is State.PLANNED]
    for waiting in rest:
        ctl.finish(waiting, Event.SKIP, error=reason)
    journal.set_meta(HELD, json.dumps(sorted(held | {r.spec.id for r in rest})))
    for record in failed[:SHOWN]:
        print(f"runner: canary failed: {_describe(record)}", file=stderr)
    count = len(held | {r.spec.id for r in rest})
    then = (
        f"; fix the cause, then {retry_hint} re-runs the failed sample jobs and, "
        "if they all succeed, the rest"
        if retry_hint
        else ""
    )
    print(f"runner: canary: {count} other job(s) not submitted (skipped){then}", file=stderr)
    return ctl.result(), ctl


def _release(control: Control, journal: Journal, records: list[JobRecord], held: set[str]) -> None:
    """Plan again the jobs a failed canary held back (their skipped job.json removed)."""
    waiting = [r for r in records if r.spec.id in held and r.state is State.SKIPPED]
    if not waiting:
        return
    ctl = control(records)
    for record in waiting:
        ctl.output.job_dir(record.spec.id).reset()
        ctl.transition(record, Event.RELEASE, error=None)
    journal.set_meta(HELD, json.dumps([]))
