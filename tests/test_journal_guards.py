"""Journal details the mutation run (make mutate) found unguarded: every column survives the
round trip, read-only opening, the exact errors, the event filter, and byte-stable JSON."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from runner.errors import StoreError
from runner.lifecycle import Event, JobRecord, State, advance
from runner.remote import RemoteRef
from runner.store.journal import Journal, JournalError
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
