"""`runner retry`: which jobs of a batch get a new attempt (a pure choice), and the two steps
that start one — the earlier attempt's jobs/<id>/ renamed to attempts/<id>/<n>/, then the
journal row put back to planned (the commit point)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from runner.errors import StoreError, UsageError
from runner.lifecycle import RETRIABLE, Event, State
from runner.store.journal import JobRow, Journal
from runner.store.log import BatchLog
from runner.store.results import ATTEMPTS, JOBS, OUTCOME, BatchDir

_LISTED = 10  # jobs named on the console line; the log names every one
_ENDINGS = "failed, timed_out or expired"  # the states of lifecycle.RETRIABLE


@dataclass(frozen=True, slots=True)
class Retry:
    """One job to send again: how its last attempt ended and the new attempt's number."""

    job_id: str
    ended: State
    attempt: int  # the new attempt (2 on the first retry)

    @property
    def previous(self) -> str:
        """Where the last attempt's files go, relative to the batch directory."""
        return f"{ATTEMPTS}/{self.job_id}/{self.attempt - 1}"


def choose(
    rows: Sequence[JobRow], attempts: Mapping[str, int], only: Sequence[str] = ()
) -> tuple[list[Retry], list[str]]:
    """The jobs to retry (every failed, timed_out or expired one; with `only`, those of
    them named) and one line for each named job that is not retried, saying why."""
    by_id = {row.job_id: row for row in rows}
    unknown = [job_id for job_id in only if job_id not in by_id]
    if unknown:
        raise UsageError(f"--only: no job {unknown[0]!r} in this batch")
    named = dict.fromkeys(only)  # in the order given, once each
    chosen = [row for row in rows if row.job_id in named] if only else rows
    retries = [
        Retry(row.job_id, row.state, attempts.get(row.job_id, 1) + 1)
        for row in chosen
        if row.state in RETRIABLE
    ]
    refused = [why_not(by_id[job_id]) for job_id in named if by_id[job_id].state not in RETRIABLE]
    return retries, refused


def why_not(row: JobRow) -> str:
    """The line for a job `--only` named that retry leaves as it is."""
    state = row.state
    if state is State.SUCCEEDED:
        return f"{row.job_id} succeeded: a succeeded job is never retried"
    if state is State.SUBMIT_UNKNOWN:
        return (
            f"{row.job_id} is submit_unknown, not retried: it may exist remotely; "
            "runner resume --resubmit-unknown sends it again"
        )
    if state.terminal:
        return f"{row.job_id} is {state.value}, not retried: retry re-runs {_ENDINGS} jobs"
    return f"{row.job_id} is {state.value} (not finished), not retried: it is continued instead"


def set_aside(batch_path: Path, retry: Retry) -> None:
    """Rename jobs/<id>/ to attempts/<id>/<n>/ (one atomic rename); an empty attempt
    directory when the job left no files. Done before the journal commits the retry: a
    kill in between leaves the job as it ended, with its files already set aside."""
    source = batch_path / JOBS / retry.job_id
    target = batch_path / retry.previous
    try:
        if target.exists():  # set aside by a retry killed before its journal commit
            _drop_rewritten(source, target)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.exists():
            os.rename(source, target)
        else:
            target.mkdir()
    except OSError as exc:
        raise StoreError(f"cannot move {source} to {target}: {exc.strerror or exc}") from exc


def _drop_rewritten(source: Path, target: Path) -> None:
    """After such a kill, a `runner resume` rewrites job.json (from the journal) in a fresh
    jobs/<id>/; the attempt's own copy is in `target` already. Anything more is not ours
    to delete."""
    if not source.exists():
        return
    if {path.name for path in source.iterdir()} <= {OUTCOME}:
        shutil.rmtree(source)
        return
    raise UsageError(
        f"{source} and {target} both exist: move one of them out of the batch directory, "
        "then run runner retry again"
    )


def start_attempts(
    batch: BatchDir,
    journal: Journal,
    only: Sequence[str] = (),
    *,
    stderr: TextIO,
    quiet: bool = False,
) -> list[Retry]:
    """Choose the jobs to retry, set each one's files aside and plan it again (journal),
    log it, and say so on `stderr`. Runs under the batch's lock, before the engine."""
    retries, refused = choose(journal.rows(), journal.attempts(), only)
    for line in refused:
        print(f"runner: retry: {line}", file=stderr)
    if not retries:
        if not quiet:
            which = "of the jobs named" if only else "job"
            print(f"runner: retry: nothing to retry (no {which} is {_ENDINGS})", file=stderr)
        return retries
    with BatchLog(batch.log_path, batch_id=batch.batch_id, secrets=batch.secrets) as log:
        for retry in retries:
            set_aside(batch.path, retry)
            detail = {"attempt": retry.attempt, "previous": retry.previous}
            journal.reset(retry.job_id, Event.RETRY, detail)
            log.logger.info(
                "job.retrying",
                job_id=retry.job_id,
                from_state=retry.ended.value,
                state=State.PLANNED.value,
                attempt=retry.attempt,
                previous=retry.previous,
            )
    if not quiet:
        listed = ", ".join(f"{r.job_id} ({r.ended.value})" for r in retries[:_LISTED])
        more = f" and {len(retries) - _LISTED} more" if len(retries) > _LISTED else ""
        print(f"runner: retry: {len(retries)} job(s) to send again: {listed}{more}", file=stderr)
    return retries
