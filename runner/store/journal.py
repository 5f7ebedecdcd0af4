"""The journal: one SQLite database per batch (WAL), the source of truth for resume.

A `Recorder`: every transition that decides what a resume sends (a submit's answer with its
remote id, a deferral, an ambiguous submit) is committed before `transition()` returns, so a
remote id is durable the moment the engine knows it. What the provider says of a job it
already has (queued, running, finished, fetched) and poll updates are committed in batches
(docs/engineering.md#journal-durability). A write SQLite refuses (disk full, read-only) is
rolled back and raised as a `StoreError`.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.errors import JournalError, StoreError, store_error
from runner.lifecycle import Event, JobRecord, Recorder, State, advance
from runner.plan import Plan
from runner.remote import RemoteRef, Status
from runner.store.redaction import redact

SCHEMA_VERSION = 1
POLL_COMMIT_EVERY = 256  # pending poll updates before a commit ...
POLL_COMMIT_SECONDS = 1.0  # ... or seconds since the last commit, whichever comes first

# synchronous=NORMAL in WAL mode: a commit is in the WAL file (the OS page cache) when
# COMMIT returns, so it survives the *process* dying at any moment (SIGKILL, OOM, crash);
# only a power loss or kernel crash can roll back the last transactions. FULL would add an
# fsync per commit (~0.2-3 ms, docs/engineering.md#journal-durability) for that case alone.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    provider TEXT NOT NULL,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    remote TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    polls INTEGER NOT NULL DEFAULT 0,
    next_poll_at REAL,
    submitted_at REAL,
    finished_at REAL,
    raw_status TEXT,
    reason TEXT,
    progress REAL,
    partial INTEGER NOT NULL DEFAULT 0,
    results_ready INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    updated_at REAL NOT NULL,
    notes TEXT
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    job_id TEXT NOT NULL,
    event TEXT NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
"""

_UPDATE_JOB = """
UPDATE jobs SET state = ?, remote = ?, attempts = ?, polls = ?, next_poll_at = ?,
    submitted_at = ?, finished_at = ?, raw_status = ?, reason = ?, progress = ?,
    partial = ?, results_ready = ?, error = ?, updated_at = ?
WHERE job_id = ?
"""
_UPDATE_POLL = """
UPDATE jobs SET polls = ?, next_poll_at = ?, raw_status = ?, reason = ?, progress = ?,
    partial = ?, results_ready = ?, updated_at = ?
WHERE job_id = ?
"""
_RESET_JOB = """
UPDATE jobs SET state = ?, remote = NULL, attempts = 0, polls = 0, next_poll_at = NULL,
    submitted_at = NULL, finished_at = NULL, raw_status = NULL, reason = NULL, progress = NULL,
    partial = 0, results_ready = 1, error = NULL, notes = NULL, updated_at = ?
WHERE job_id = ? AND state = ?
"""
_INSERT_EVENT = (
    "INSERT INTO events (time, job_id, event, from_state, to_state, detail) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
# Transitions of a job the provider already has, and the start of a submit, need not commit
# at once: a kill that loses them leaves the job where the journal last had it, polled (and
# fetched) again on resume, or sent again when nothing left (the "sent" note, committed
# before a submit's request leaves, carries the pending SUBMIT with it).
_DEFERRABLE_FROM = frozenset({State.QUEUED, State.RUNNING, State.PAUSED, State.FETCHING})


def commits_at_once(event: Event, previous: State) -> bool:
    """Does this transition commit before `transition` returns? Yes for everything that
    decides what a resume sends: a submit's answer (the remote id), a deferral, an ambiguous
    submit and its reconciliation, a skip, a retry."""
    return event is not Event.SUBMIT and previous not in _DEFERRABLE_FROM


_INSERT_JOB = """
INSERT OR IGNORE INTO jobs (job_id, position, provider, type, state, updated_at)
VALUES (?, ?, ?, ?, ?, ?)
"""
_COLUMNS = (
    "job_id, position, provider, type, state, remote, attempts, polls, next_poll_at, "
    "submitted_at, finished_at, raw_status, reason, progress, partial, results_ready, error, "
    "updated_at, notes"
)


@dataclass(frozen=True, slots=True)
class JobRow:
    """One job as the journal has it (what `runner status` shows)."""

    job_id: str
    position: int
    provider: str
    type: str
    state: State
    remote: RemoteRef | None
    attempts: int
    polls: int
    next_poll_at: float | None
    submitted_at: float | None
    finished_at: float | None
    raw_status: str | None
    reason: str | None
    progress: float | None
    partial: bool
    results_ready: bool
    error: str | None
    updated_at: float
    notes: dict[str, Any]  # the adapter's durable memory (ProviderHttp.note)


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    time: float
    job_id: str
    event: str
    from_state: str
    to_state: str
    detail: dict[str, Any]


def _row(values: Sequence[Any]) -> JobRow:
    remote = RemoteRef.from_dict(json.loads(values[5])) if values[5] else None
    return JobRow(
        job_id=values[0],
        position=values[1],
        provider=values[2],
        type=values[3],
        state=State(values[4]),
        remote=remote,
        attempts=values[6],
        polls=values[7],
        next_poll_at=values[8],
        submitted_at=values[9],
        finished_at=values[10],
        raw_status=values[11],
        reason=values[12],
        progress=values[13],
        partial=bool(values[14]),
        results_ready=bool(values[15]),
        error=values[16],
        updated_at=values[17],
        notes=json.loads(values[18]) if values[18] else {},
    )


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        # mode=ro still reads the WAL, so `runner status` sees a live run's commits.
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)
    else:
        conn = sqlite3.connect(path, timeout=5.0)
    conn.isolation_level = None  # transactions are explicit: BEGIN ... COMMIT below
    if not readonly:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class Journal:
    """The batch journal. Not thread-safe: the engine's one thread owns it."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        secrets: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = conn
        self.path = path
        self._secrets = tuple(s for s in secrets if s)
        self._clock = clock
        self._pending_polls = 0
        self._last_commit = clock()
        self.failed: StoreError | None = None  # the first write SQLite refused

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: Path,
        plan: Plan,
        batch_id: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> Journal:
        """A new journal at `path` with every job of `plan` planned (one transaction)."""
        if path.exists():
            raise JournalError(f"{path} already exists")
        try:
            conn = _connect(path, readonly=False)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot create the journal {path}: {exc}") from exc
        journal = cls(conn, path, secrets=plan.secrets, clock=clock)
        try:
            with journal._transaction():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("batch_id", batch_id),
                        ("name", plan.name),
                        ("manifest_sha256", plan.manifest_sha256),
                    ],
                )
                journal._insert_planned(plan)
        except StoreError:
            journal.close()
            raise
        return journal

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        readonly: bool = False,
        secrets: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> Journal:
        """An existing journal (resume; `readonly=True` for status while a run is live)."""
        if not path.is_file():
            raise JournalError(f"no journal at {path}")
        try:
            conn = _connect(path, readonly=readonly)
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.Error as exc:
            raise JournalError(f"cannot read the journal {path}: {exc}") from exc
        if version is None or int(version[0]) != SCHEMA_VERSION:
            conn.close()
            found = version[0] if version else "none"
            raise JournalError(
                f"{path}: schema version {found}, this runner reads {SCHEMA_VERSION}"
            )
        return cls(conn, path, secrets=secrets, clock=clock)

    def close(self) -> None:
        """Commit pending poll updates and close (checkpoints the WAL when last out). Safe
        after a failed write: the connection is closed whatever happens, and a commit that
        fails here is raised only if it is the first failure (one report per cause)."""
        failed_before = self.failed is not None
        try:
            self.flush()
        except StoreError:
            if not failed_before:
                raise
        finally:
            with contextlib.suppress(sqlite3.Error):  # a checkpoint the full disk refuses
                self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Recorder ------------------------------------------------------------------------

    def transition(self, job: JobRecord, event: Event, previous: State) -> None:
        """Write the job row and the event. COMMIT before returning when the transition
        decides what a resume sends (`commits_at_once`); otherwise it rides with the poll
        updates (committed with the next such transition, the next note, or within
        POLL_COMMIT_EVERY updates / POLL_COMMIT_SECONDS)."""
        now = self._clock()
        detail: dict[str, Any] = {}
        if job.remote is not None and previous in (State.SUBMITTING, State.SUBMIT_UNKNOWN):
            detail["remote"] = job.remote.as_dict()
        for key in ("raw_status", "reason", "error"):
            value = getattr(job, key)
            if value is not None:
                detail[key] = self._redact(value)
        values = (
            now,
            job.spec.id,
            event.value,
            previous.value,
            job.state.value,
            json.dumps(detail, sort_keys=True) if detail else "{}",
        )
        if commits_at_once(event, previous):
            with self._transaction():
                self._conn.execute(_UPDATE_JOB, (*self._job_values(job), now, job.spec.id))
                self._conn.execute(_INSERT_EVENT, values)
            return
        with self._refused():
            if not self._conn.in_transaction:
                self._conn.execute("BEGIN")
            self._conn.execute(_UPDATE_JOB, (*self._job_values(job), now, job.spec.id))
            self._conn.execute(_INSERT_EVENT, values)
        self._pending(now)

    def noted(self, job: JobRecord, key: str) -> None:
        """Persist the adapter's notes (a finished submit step) and COMMIT before returning."""
        with self._transaction():
            self._conn.execute(
                "UPDATE jobs SET notes = ?, updated_at = ? WHERE job_id = ?",
                (json.dumps(job.notes, sort_keys=True, default=str), self._clock(), job.spec.id),
            )

    def polled(self, job: JobRecord, status: Status) -> None:
        """Record a poll. Committed with the next transition, or every POLL_COMMIT_EVERY
        polls / POLL_COMMIT_SECONDS seconds: losing the last few is harmless (the job is
        polled again after a resume)."""
        now = self._clock()
        with self._refused():
            if not self._conn.in_transaction:
                self._conn.execute("BEGIN")
            self._conn.execute(
                _UPDATE_POLL,
                (
                    job.polls,
                    job.next_poll_at,
                    self._redact(job.raw_status),
                    self._redact(job.reason),
                    job.progress,
                    int(job.partial),
                    int(job.results_ready),
                    now,
                    job.spec.id,
                ),
            )
        self._pending(now)

    def _pending(self, now: float) -> None:
        """One more update in the open transaction: commit when enough are pending."""
        self._pending_polls += 1
        if (
            self._pending_polls >= POLL_COMMIT_EVERY
            or now - self._last_commit >= POLL_COMMIT_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        """Commit whatever poll updates are pending."""
        if self._conn.in_transaction:
            with self._refused():
                self._conn.execute("COMMIT")
        self._pending_polls = 0
        self._last_commit = self._clock()

    def reset(self, job_id: str, event: Event, detail: Mapping[str, Any]) -> State:
        """Put a finished job back where `event` takes it (`runner retry`: planned) for a
        new attempt, and COMMIT: its remote ref, submit sends, polls, statuses, error and
        notes (the adapter's steps and the engine's sent mark) are cleared, so it is sent
        afresh. The event keeps what the attempt left (remote ref, error) and `detail`."""
        row = self.row(job_id)
        if row is None:
            raise JournalError(f"no job {job_id!r} in {self.path}")
        state = advance(row.state, event)
        kept: dict[str, Any] = dict(detail)
        if row.remote is not None:
            kept["remote"] = row.remote.as_dict()
        if row.error is not None:
            kept["error"] = row.error  # redacted when it was written
        now = self._clock()
        with self._transaction():
            self._conn.execute(_RESET_JOB, (state.value, now, job_id, row.state.value))
            self._conn.execute(
                "INSERT INTO events (time, job_id, event, from_state, to_state, detail) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    now,
                    job_id,
                    event.value,
                    row.state.value,
                    state.value,
                    json.dumps(kept, sort_keys=True),
                ),
            )
        return state

    def attempts(self) -> dict[str, int]:
        """job id → its attempt number, for the jobs `runner retry` sent again (others: 1)."""
        cursor = self._conn.execute(
            "SELECT job_id, COUNT(*) FROM events WHERE event = ? GROUP BY job_id",
            (Event.RETRY.value,),
        )
        return {job_id: 1 + retries for job_id, retries in cursor}

    def set_meta(self, key: str, value: str) -> None:
        """Store one batch-level fact (e.g. the original manifest path, for resume)."""
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
            )

    # -- reading -----------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def rows(self) -> list[JobRow]:
        """Every job, in plan order."""
        cursor = self._conn.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY position, job_id")
        return [_row(values) for values in cursor]

    def row(self, job_id: str) -> JobRow | None:
        values = self._conn.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        return _row(values) if values else None

    def events(self, job_id: str | None = None) -> list[EventRow]:
        query = "SELECT seq, time, job_id, event, from_state, to_state, detail FROM events"
        args: tuple[str, ...] = ()
        if job_id is not None:
            query += " WHERE job_id = ?"
            args = (job_id,)
        cursor = self._conn.execute(query + " ORDER BY seq", args)
        return [
            EventRow(
                seq=seq,
                time=moment,
                job_id=job_id,
                event=event,
                from_state=from_state,
                to_state=to_state,
                detail=json.loads(detail),
            )
            for seq, moment, job_id, event, from_state, to_state, detail in cursor
        ]

    def moments(self) -> Iterator[tuple[float, str, str, str]]:
        """(time, job id, event, new state) of every event in order, details left unread:
        what `runner report` draws, for 100,000 jobs in about a second."""
        yield from self._conn.execute(
            "SELECT time, job_id, event, to_state FROM events ORDER BY seq"
        )

    def counts(self) -> dict[str, int]:
        """Jobs per state (only states that have jobs), in lifecycle order."""
        found = dict(self._conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        return {state.value: found[state.value] for state in State if state.value in found}

    def remote_ids(self) -> dict[str, str]:
        """job id → remote id, for every job that has one (batch.json)."""
        cursor = self._conn.execute(
            "SELECT job_id, remote FROM jobs WHERE remote IS NOT NULL ORDER BY position"
        )
        return {job_id: json.loads(remote)["id"] for job_id, remote in cursor}

    def load_records(self, plan: Plan) -> list[JobRecord]:
        """JobRecords for every job of `plan` in plan order, as the journal left them
        (jobs it does not know yet are added as planned)."""
        self._insert_missing(plan)
        rows = {row.job_id: row for row in self.rows()}
        attempts = self.attempts()
        records = []
        for spec in plan.jobs:
            row = rows[spec.id]
            records.append(
                JobRecord(
                    spec=spec,
                    state=row.state,
                    remote=row.remote,
                    attempts=row.attempts,
                    polls=row.polls,
                    submitted_at=row.submitted_at,
                    finished_at=row.finished_at,
                    next_poll_at=row.next_poll_at,
                    raw_status=row.raw_status,
                    reason=row.reason,
                    progress=row.progress,
                    partial=row.partial,
                    results_ready=row.results_ready,
                    error=row.error,
                    notes=dict(row.notes),
                    attempt=attempts.get(spec.id, 1),
                )
            )
        return records

    # -- internals ---------------------------------------------------------------------------

    def _redact(self, text: str | None) -> str | None:
        if text is None or not self._secrets:
            return text
        return redact(text, self._secrets)

    def _job_values(self, job: JobRecord) -> tuple[Any, ...]:
        remote = json.dumps(job.remote.as_dict(), sort_keys=True) if job.remote else None
        return (
            job.state.value,
            remote,
            job.attempts,
            job.polls,
            job.next_poll_at,
            job.submitted_at,
            job.finished_at,
            self._redact(job.raw_status),
            self._redact(job.reason),
            job.progress,
            int(job.partial),
            int(job.results_ready),
            self._redact(job.error),
        )

    def _insert_planned(self, plan: Plan) -> None:
        now = self._clock()
        self._conn.executemany(
            _INSERT_JOB,
            (
                (spec.id, position, spec.provider, spec.type, State.PLANNED.value, now)
                for position, spec in enumerate(plan.jobs)
            ),
        )

    def _insert_missing(self, plan: Plan) -> None:
        known = {job_id for (job_id,) in self._conn.execute("SELECT job_id FROM jobs")}
        if all(spec.id in known for spec in plan.jobs):
            return
        with self._transaction():
            self._insert_planned(plan)  # INSERT OR IGNORE: known rows stay as they are

    def _rollback(self) -> None:
        # SQLite may already have rolled back itself (SQLITE_FULL, SQLITE_IOERR); a ROLLBACK
        # that fails too leaves nothing half-done: uncommitted work is never read back.
        with contextlib.suppress(sqlite3.Error):
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        self._pending_polls = 0

    @contextlib.contextmanager
    def _refused(self) -> Iterator[None]:
        """A write SQLite refuses: roll the transaction back, raise StoreError naming the
        journal (`cannot write …/journal.sqlite: database or disk is full`)."""
        try:
            yield
        except sqlite3.Error as exc:
            self._rollback()
            error = store_error(self.path, exc)
            if self.failed is None:
                self.failed = error
            raise error from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT (ROLLBACK on error), folding in any pending poll updates."""
        with self._refused():
            if not self._conn.in_transaction:
                self._conn.execute("BEGIN")
            try:
                yield
            except BaseException:
                self._rollback()
                raise
        self.flush()


if TYPE_CHECKING:  # mypy proves Journal is a Recorder

    def _is_recorder(recorder: Journal) -> Recorder:
        return recorder
