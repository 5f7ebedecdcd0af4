"""Journal details the mutation run (make mutate) found unguarded: every column survives the
round trip, read-only opening, the exact errors, the event filter, and byte-stable JSON."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from runner.errors import StoreError
from runner.lifecycle import Event, JobRecord, State, advance
from runner.remote import RemoteRef, RemoteState, Status
from runner.store.journal import POLL_COMMIT_EVERY, Journal, JournalError
from tests.test_journal import Clock
from tests.test_results import make_plan


def _move(journal: Journal, job: JobRecord, event: Event, **changes: object) -> None:
    previous = job.state
    job.state = advance(job.state, event)
    for name, value in changes.items():
        setattr(job, name, value)
    journal.transition(job, event, previous)


def _finished(tmp_path: Path) -> tuple[Path, JobRecord]:
    path = tmp_path / "journal.sqlite"
    plan = make_plan(2)
    clock = Clock(1_000.0)
    with Journal.create(path, plan, "b", clock=clock) as journal:
        job = JobRecord(spec=plan.jobs[0])
        _move(journal, job, Event.SUBMIT)
        clock.now = 1_001.0
        _move(journal, job, Event.QUEUED, remote=RemoteRef("r-1"), submitted_at=1_000.5)
        job.polls = 3
        clock.now = 1_002.0
        _move(journal, job, Event.FAILED, finished_at=1_002.5, error="provider said no")
    return path, job


def test_every_field_a_resume_needs_survives_the_round_trip(tmp_path: Path) -> None:
    path, _ = _finished(tmp_path)
    with Journal.open(path) as journal:
        row = journal.row("job-0")
        assert row is not None
        assert row.finished_at == 1_002.5
        assert row.updated_at == 1_002.0
        assert row.notes == {}
        record = journal.load_records(make_plan(2))[0]
    assert record.state is State.FAILED
    assert (record.polls, record.finished_at, record.error) == (3, 1_002.5, "provider said no")
    assert record.submitted_at == 1_000.5


def test_a_read_only_journal_reads_a_live_one_and_writes_nothing(tmp_path: Path) -> None:
    path, _ = _finished(tmp_path)
    with Journal.open(path, readonly=True) as journal:
        assert journal.counts() == {"planned": 1, "failed": 1}
        with pytest.raises(StoreError):  # a refused write names the journal
            journal.set_meta("k", "v")
    with Journal.open(path) as journal:
        assert "k" not in journal.meta()


def test_the_journal_errors_say_what_and_where(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "journal.sqlite"
    with pytest.raises(JournalError) as made:
        Journal.create(missing, make_plan(), "b")
    assert str(made.value).startswith(f"cannot create the journal {missing}: ")
    not_sqlite = tmp_path / "notes.sqlite"
    not_sqlite.write_bytes(b"this is not a database, not even close" * 40)
    with pytest.raises(JournalError) as opened:
        Journal.open(not_sqlite)
    assert str(opened.value).startswith(f"cannot read the journal {not_sqlite}: ")
    empty = tmp_path / "empty.sqlite"
    conn = sqlite3.connect(empty)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError) as versioned:
        Journal.open(empty)
    assert str(versioned.value) == f"{empty}: schema version none, this runner reads 1"
    path, _ = _finished(tmp_path)
    with Journal.open(path) as journal, pytest.raises(JournalError) as reset:
        journal.reset("job-9", Event.RETRY, {})
    assert str(reset.value) == f"no job 'job-9' in {path}"


def test_events_are_filtered_by_job_and_carry_its_id(tmp_path: Path) -> None:
    path, _ = _finished(tmp_path)
    with Journal.open(path) as journal:
        every = journal.events()
        mine = journal.events("job-0")
        assert journal.events("job-1") == []
        assert journal.row("job-9") is None
    assert [e.event for e in mine] == [Event.SUBMIT.value, Event.QUEUED.value, Event.FAILED.value]
    assert {e.job_id for e in mine} == {"job-0"}
    assert every == mine


def test_stored_json_is_key_sorted_so_the_file_is_byte_stable(tmp_path: Path) -> None:
    path, job = _finished(tmp_path)
    with Journal.open(path, secrets=["sk-live-SECRET"]) as journal:
        job.notes = {"zeta": 1, "alpha": Path("/x")}  # not JSON by itself: written as text
        journal.noted(job, "zeta")
        conn = sqlite3.connect(path)
        (notes,) = conn.execute("SELECT notes FROM jobs WHERE job_id = 'job-0'").fetchone()
        journal.reset("job-0", Event.RETRY, {"z": 1, "a": 2})
    details = [d for (d,) in conn.execute("SELECT detail FROM events ORDER BY seq")]
    conn.close()
    assert notes == '{"alpha": "/x", "zeta": 1}'
    for detail in details:
        assert detail == json.dumps(json.loads(detail), sort_keys=True)
    assert json.loads(details[-1]) == {
        "a": 2,
        "error": "provider said no",
        "remote": {"extra": {}, "id": "r-1"},
        "z": 1,
    }


def test_a_plan_that_grew_adds_its_new_jobs_as_planned(tmp_path: Path) -> None:
    path, _ = _finished(tmp_path)
    with Journal.open(path) as journal:
        records = journal.load_records(make_plan(3))
        assert [(r.spec.id, r.state) for r in records] == [
            ("job-0", State.FAILED),
            ("job-1", State.PLANNED),
            ("job-2", State.PLANNED),
        ]
        assert journal.counts() == {"planned": 2, "failed": 1}


# -- found by the second mutation run ---------------------------------------------------------


def _polls_on_disk(path: Path, job_id: str = "job-0") -> int:
    reader = sqlite3.connect(path)
    try:
        (polls,) = reader.execute("SELECT polls FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    finally:
        reader.close()
    return int(polls)


def _running(journal: Journal, plan_job: Any) -> JobRecord:
    job = JobRecord(spec=plan_job)
    _move(journal, job, Event.SUBMIT)
    _move(journal, job, Event.RUNNING, remote=RemoteRef("r-1"))
    return job


def _poll_until_committed(journal: Journal, job: JobRecord, path: Path) -> int:
    """Polls sent (at one instant) until the first of them reaches the disk."""
    status = Status(RemoteState.RUNNING, raw="running")
    for n in range(1, 2 * POLL_COMMIT_EVERY):
        job.polls = n
        journal.polled(job, status)
        if _polls_on_disk(path) == n:
            return n
    raise AssertionError("the polls were never committed")


def test_a_reopened_journal_commits_polls_every_poll_commit_every(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    plan = make_plan(1)
    clock = Clock(1_000.0)
    with Journal.create(path, plan, "b", clock=clock) as journal:
        job = _running(journal, plan.jobs[0])
    with Journal.open(path, clock=clock) as journal:
        assert _poll_until_committed(journal, job, path) == POLL_COMMIT_EVERY
        job.polls, job.reason = job.polls + 1, "slow"
        journal.polled(job, Status(RemoteState.RUNNING, raw="running", reason="slow"))
        journal.flush()
        row = journal.row("job-0")
        assert row is not None
        assert (row.polls, row.reason) == (POLL_COMMIT_EVERY + 1, "slow")


def test_a_reopened_journal_keeps_its_secrets_and_clock(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    plan = make_plan(1)
    with Journal.create(path, plan, "b", clock=Clock(1_000.0)):
        pass
    with Journal.open(path, secrets=["sk-live-SECRET"], clock=Clock(2_000.0)) as journal:
        job = JobRecord(spec=plan.jobs[0])
        _move(journal, job, Event.SUBMIT)
        _move(journal, job, Event.FAILED, error="refused key sk-live-SECRET")
        events = journal.events("job-0")
    assert [e.time for e in events] == [2_000.0, 2_000.0]
    assert events[-1].detail == {"error": "refused key ***"}


def _refuse_failed_events(path: Path) -> None:
    # A real refusal from SQLite in the middle of a transaction: the job row is updated,
    # then the event insert is aborted.
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.to_state = 'failed' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    conn.commit()
    conn.close()


def test_a_refused_transition_is_rolled_back_whole_and_polls_count_afresh(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    plan = make_plan(1)
    clock = Clock(1_000.0)
    journal = Journal.create(path, plan, "b", clock=clock)
    job = _running(journal, plan.jobs[0])
    _refuse_failed_events(path)
    job.polls = 7
    journal.polled(job, Status(RemoteState.RUNNING, raw="running"))  # pending, then lost
    previous = job.state
    job.state = advance(job.state, Event.FAILED)
    with pytest.raises(StoreError):
        journal.transition(job, Event.FAILED, previous)
    job.state = previous
    row = journal.row("job-0")
    assert row is not None
    assert (row.state, row.polls) == (State.RUNNING, 0)  # the job row's update went too
    assert _poll_until_committed(journal, job, path) == POLL_COMMIT_EVERY  # counted afresh
    journal.set_meta("after", "yes")  # the next write starts a clean transaction
    journal.close()
    with Journal.open(path) as reopened:
        row = reopened.row("job-0")
        assert row is not None
        assert row.state is State.RUNNING
        assert reopened.meta()["after"] == "yes"


def test_plan_jobs_all_new_to_the_journal_are_added(tmp_path: Path) -> None:
    path, _ = _finished(tmp_path)
    plan = make_plan(2)
    renamed = dataclasses.replace(
        plan, jobs=tuple(dataclasses.replace(spec, id=f"new-{spec.id}") for spec in plan.jobs)
    )
    with Journal.open(path) as journal:
        records = journal.load_records(renamed)
        assert [(r.spec.id, r.state) for r in records] == [
            ("new-job-0", State.PLANNED),
            ("new-job-1", State.PLANNED),
        ]


class _CommitRefused:
    """A connection whose COMMIT and close fail as a full disk makes them fail."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self._conn.execute(sql, *args)

    def close(self) -> None:
        self._conn.close()
        raise sqlite3.OperationalError("database or disk is full")


def _pending_poll_then_full_disk(tmp_path: Path) -> Journal:
    tmp_path.mkdir()
    path = tmp_path / "journal.sqlite"
    plan = make_plan(1)
    journal = Journal.create(path, plan, "b", clock=Clock(1_000.0))
    job = _running(journal, plan.jobs[0])
    job.polls = 1
    journal.polled(job, Status(RemoteState.RUNNING, raw="running"))
    journal._conn = _CommitRefused(journal._conn)  # type: ignore[assignment]
    return journal


def test_close_reports_a_first_failure_and_never_a_second(tmp_path: Path) -> None:
    journal = _pending_poll_then_full_disk(tmp_path / "first")
    with pytest.raises(StoreError) as caught:
        journal.close()
    assert journal.failed is caught.value
    assert str(caught.value).endswith("database or disk is full")

    journal = _pending_poll_then_full_disk(tmp_path / "second")
    with pytest.raises(StoreError) as first:
        journal.flush()
    job = JobRecord(spec=make_plan(1).jobs[0], state=State.RUNNING, polls=2)
    journal.polled(job, Status(RemoteState.RUNNING, raw="running"))  # pending again
    journal.close()  # the same cause again: already reported, not raised twice
    assert journal.failed is first.value
