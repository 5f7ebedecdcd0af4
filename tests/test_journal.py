"""The journal: durable transitions, cheap polls, and the round trip that resume relies on."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from runner.errors import JournalError, StoreError
from runner.lifecycle import Event, JobRecord, State, advance
from runner.remote import RemoteRef, RemoteState, Status
from runner.store.journal import POLL_COMMIT_EVERY, Journal, commits_at_once
from tests.test_results import make_plan


class Clock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _move(journal: Journal, job: JobRecord, event: Event) -> None:
    previous = job.state
    job.state = advance(job.state, event)
    journal.transition(job, event, previous)


def _other_connection(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


def test_create_plans_every_job_and_records_meta(tmp_path: Path) -> None:
    plan = make_plan(3)
    with Journal.create(tmp_path / "journal.sqlite", plan, "20261122T030000Z") as journal:
        assert journal.meta() == {
            "batch_id": "20261122T030000Z",
            "manifest_sha256": plan.manifest_sha256,
            "name": "nightly",
            "schema_version": "1",
        }
        assert [(r.job_id, r.position, r.state) for r in journal.rows()] == [
            ("job-0", 0, State.PLANNED),
            ("job-1", 1, State.PLANNED),
            ("job-2", 2, State.PLANNED),
        ]
        assert journal.counts() == {"planned": 3}
    conn = _other_connection(tmp_path / "journal.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_create_refuses_to_overwrite_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    Journal.create(path, make_plan(), "b").close()
    with pytest.raises(JournalError, match="already exists"):
        Journal.create(path, make_plan(), "b")


def test_transition_is_committed_before_it_returns(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    plan = make_plan(1)
    journal = Journal.create(path, plan, "b", clock=Clock())
    reader = _other_connection(path)
    job = JobRecord(spec=plan.jobs[0])
    _move(journal, job, Event.SUBMIT)
    job.remote = RemoteRef("sp-123", {"kind": "scrape"})
    job.submitted_at = 1_000.5
    _move(journal, job, Event.QUEUED)
    # A second connection sees the remote id at once: a SIGKILL now loses nothing.
    assert reader.execute("SELECT state, remote FROM jobs").fetchone() == (
        "queued",
        '{"extra": {"kind": "scrape"}, "id": "sp-123"}',
    )
    assert reader.execute("SELECT event, from_state, to_state FROM events").fetchall() == [
        ("submit", "planned", "submitting"),
        ("observed_queued", "submitting", "queued"),
    ]
    journal.close()


def test_events_carry_the_remote_id_when_it_becomes_known(tmp_path: Path) -> None:
    plan = make_plan(1)
    journal = Journal.create(tmp_path / "j.sqlite", plan, "b", clock=Clock(5.0))
    job = JobRecord(spec=plan.jobs[0])
    _move(journal, job, Event.SUBMIT)
    job.remote = RemoteRef("sp-9")
    job.raw_status = "waiting"
    _move(journal, job, Event.QUEUED)
    job.raw_status = "completed"
    _move(journal, job, Event.FINISHED)
    events = journal.events("job-0")
    assert [(e.seq, e.time, e.event, e.detail) for e in events] == [
        (1, 5.0, "submit", {}),
        (
            2,
            5.0,
            "observed_queued",
            {"remote": {"extra": {}, "id": "sp-9"}, "raw_status": "waiting"},
        ),
        (3, 5.0, "observed_finished", {"raw_status": "completed"}),
    ]


def test_round_trip_rebuilds_records_for_resume(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    plan = make_plan(3)
    journal = Journal.create(path, plan, "b")
    job = JobRecord(spec=plan.jobs[1])
    _move(journal, job, Event.SUBMIT)
    job.attempts = 1
    job.remote = RemoteRef("r-1", {"squid": "sq-7"})
    job.submitted_at = 12.5
    job.raw_status = "running"
    job.progress = 0.25
    job.partial = True
    job.results_ready = False
    job.next_poll_at = 99.0
    job.reason = "because"
    _move(journal, job, Event.RUNNING)
    journal.close()

    reopened = Journal.open(path)
    records = reopened.load_records(plan)
    assert [r.state for r in records] == [State.PLANNED, State.RUNNING, State.PLANNED]
    assert records[1] == job
    assert records[0] == JobRecord(spec=plan.jobs[0])
    reopened.close()


def test_load_records_adds_jobs_the_journal_never_saw(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    small = make_plan(1)
    Journal.create(path, small, "b").close()
    bigger = make_plan(3)
    with Journal.open(path) as journal:
        records = journal.load_records(bigger)
        assert [(r.spec.id, r.state) for r in records] == [
            ("job-0", State.PLANNED),
            ("job-1", State.PLANNED),
            ("job-2", State.PLANNED),
        ]
        assert journal.counts() == {"planned": 3}


def test_polls_are_batched_and_folded_into_the_next_transition(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    plan = make_plan(2)
    clock = Clock()
    journal = Journal.create(path, plan, "b", clock=clock)
    reader = _other_connection(path)
    job = JobRecord(spec=plan.jobs[0])
    _move(journal, job, Event.SUBMIT)
    job.remote = RemoteRef("r")
    _move(journal, job, Event.RUNNING)
    status = Status(RemoteState.RUNNING, raw="running", progress=0.5)
    job.polls, job.progress, job.raw_status = 1, 0.5, "running"
    journal.polled(job, status)
    assert reader.execute("SELECT polls FROM jobs WHERE job_id='job-0'").fetchone() == (0,)
    other = JobRecord(spec=plan.jobs[1])
    _move(journal, other, Event.SUBMIT)  # deferred too: nothing has left yet
    assert reader.execute("SELECT polls FROM jobs WHERE job_id='job-0'").fetchone() == (0,)
    other.remote = RemoteRef("r2")
    _move(journal, other, Event.QUEUED)  # a submit's answer commits the pending ones too
    assert reader.execute("SELECT polls, progress FROM jobs WHERE job_id='job-0'").fetchone() == (
        1,
        0.5,
    )
    for n in range(2, POLL_COMMIT_EVERY + 2):
        job.polls = n
        journal.polled(job, status)
    assert reader.execute("SELECT polls FROM jobs WHERE job_id='job-0'").fetchone() == (
        POLL_COMMIT_EVERY + 1,
    )
    job.polls += 1
    journal.polled(job, status)
    clock.now += 1.0  # a second later, the next poll commits
    job.polls += 1
    journal.polled(job, status)
    assert reader.execute("SELECT polls FROM jobs WHERE job_id='job-0'").fetchone() == (
        POLL_COMMIT_EVERY + 3,
    )
    journal.close()


def test_a_reader_sees_a_live_run_while_it_writes(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    plan = make_plan(2)
    writer = Journal.create(path, plan, "b")
    job = JobRecord(spec=plan.jobs[0])
    _move(writer, job, Event.SUBMIT)
    reader = Journal.open(path, readonly=True)
    assert reader.counts() == {"planned": 2}  # a submit's start waits for its "sent" note
    _move(writer, job, Event.SKIP)
    assert reader.counts() == {"planned": 1, "skipped": 1}
    with pytest.raises(StoreError) as refused:  # a reader cannot write, and says where
        reader.load_records(replace(plan, jobs=(*plan.jobs, replace(plan.jobs[0], id="new"))))
    assert refused.value.path == path
    assert refused.value.remedy == "make it writable"
    assert isinstance(refused.value.__cause__, sqlite3.OperationalError)
    reader.close()
    writer.close()


def test_secrets_never_reach_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    plan = make_plan(1, key="sk-live-SECRET")
    journal = Journal.create(path, plan, "b")
    job = JobRecord(spec=plan.jobs[0])
    _move(journal, job, Event.SUBMIT)
    job.remote = RemoteRef("r")
    job.raw_status, job.reason = "running as sk-live-SECRET", "quota of sk-live-SECRET"
    _move(journal, job, Event.RUNNING)
    job.polls += 1
    journal.polled(job, Status(RemoteState.RUNNING, raw=job.raw_status))
    job.error = "refused key sk-live-SECRET for this account"
    _move(journal, job, Event.FAILED)
    journal.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"sk-live-SECRET" not in raw
    with Journal.open(path) as reopened:
        row = reopened.row("job-0")
        assert row is not None
        assert (row.raw_status, row.reason, row.error) == (
            "running as ***",
            "quota of ***",
            "refused key *** for this account",
        )


def test_remote_ids_and_schema_checks(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    plan = make_plan(2)
    journal = Journal.create(path, plan, "b")
    job = JobRecord(spec=plan.jobs[1])
    _move(journal, job, Event.SUBMIT)
    job.remote = RemoteRef("remote-1")
    _move(journal, job, Event.QUEUED)
    assert journal.remote_ids() == {"job-1": "remote-1"}
    journal.close()
    conn = _other_connection(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError) as info:
        Journal.open(path)
    assert str(info.value) == f"{path}: schema version 99, this runner reads 1"
    with pytest.raises(JournalError) as missing:
        Journal.open(tmp_path / "nope.sqlite")
    assert str(missing.value) == f"no journal at {tmp_path / 'nope.sqlite'}"


def test_noted_commits_notes_before_returning_and_resume_restores_them(tmp_path: Path) -> None:
    plan = make_plan(2)
    journal = Journal.create(tmp_path / "journal.sqlite", plan, "B1")
    record = journal.load_records(plan)[0]
    record.notes["squid"] = "0123abcd"
    journal.noted(record, "squid")
    other = sqlite3.connect(tmp_path / "journal.sqlite")
    (stored,) = other.execute("SELECT notes FROM jobs WHERE job_id = 'job-0'").fetchone()
    assert json.loads(stored) == {"squid": "0123abcd"}
    journal.close()
    again = Journal.open(tmp_path / "journal.sqlite")
    restored = {r.spec.id: r.notes for r in again.load_records(plan)}
    assert restored == {"job-0": {"squid": "0123abcd"}, "job-1": {}}


# -- which transitions commit at once (docs/engineering.md#journal-durability) -------------------


@pytest.mark.parametrize(
    ("event", "previous", "at_once"),
    [
        (Event.SUBMIT, State.PLANNED, False),  # its "sent" note commits it before a byte leaves
        (Event.QUEUED, State.SUBMITTING, True),  # the submit's answer: the remote id
        (Event.RUNNING, State.SUBMITTING, True),
        (Event.DEFERRED, State.SUBMITTING, True),
        (Event.AMBIGUOUS, State.SUBMITTING, True),
        (Event.RECONCILED, State.SUBMIT_UNKNOWN, True),
        (Event.RESUBMIT, State.SUBMIT_UNKNOWN, True),
        (Event.SKIP, State.PLANNED, True),
        (Event.RUNNING, State.QUEUED, False),  # what the provider says of a job it has
        (Event.FINISHED, State.RUNNING, False),
        (Event.TIMEOUT, State.PAUSED, False),
        (Event.FETCHED, State.FETCHING, False),
    ],
)
def test_what_decides_a_resume_commits_at_once(
    event: Event, previous: State, at_once: bool
) -> None:
    assert commits_at_once(event, previous) is at_once


def test_a_known_job_s_progress_rides_with_the_polls_and_commits_within_a_second(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    plan = make_plan(1)
    clock = Clock()
    journal = Journal.create(path, plan, "b", clock=clock)
    reader = _other_connection(path)
    job = JobRecord(spec=plan.jobs[0])
    _move(journal, job, Event.SUBMIT)
    job.remote = RemoteRef("r")
    _move(journal, job, Event.QUEUED)
    state = "SELECT state FROM jobs WHERE job_id='job-0'"
    assert reader.execute(state).fetchone() == ("queued",)
    _move(journal, job, Event.RUNNING)
    _move(journal, job, Event.FINISHED)
    assert reader.execute(state).fetchone() == ("queued",)  # pending, not lost
    clock.now += 1.0
    _move(journal, job, Event.FETCHED)  # a second on: this one commits them all
    assert reader.execute(state).fetchone() == ("succeeded",)
    with Journal.open(path, readonly=True) as reader_journal:
        events = [e.event for e in reader_journal.events()]
    assert events == [
        "submit",
        "observed_queued",
        "observed_running",
        "observed_finished",
        "fetched",
    ]
    journal.close()


def test_a_kill_loses_only_what_a_resume_does_again(tmp_path: Path) -> None:
    """The process dies with transitions pending: the remote id stays, the job is where a
    resume polls it again (and an unsent submit is simply sent)."""
    path = tmp_path / "journal.sqlite"
    plan = make_plan(2)
    journal = Journal.create(path, plan, "b")
    job, other = JobRecord(spec=plan.jobs[0]), JobRecord(spec=plan.jobs[1])
    _move(journal, job, Event.SUBMIT)
    journal.noted(job, "runner.sent")  # the sent mark commits the pending SUBMIT with it
    job.remote = RemoteRef("r-0")
    _move(journal, job, Event.RUNNING)
    _move(journal, job, Event.FINISHED)  # pending
    _move(journal, other, Event.SUBMIT)  # pending: nothing has left for it
    journal._conn.close()  # SIGKILL: the open transaction is gone, nothing was flushed
    with Journal.open(path) as after:
        rows = {row.job_id: row for row in after.rows()}
    assert rows["job-0"].state is State.RUNNING
    assert rows["job-0"].remote == RemoteRef("r-0")
    assert rows["job-1"].state is State.PLANNED
