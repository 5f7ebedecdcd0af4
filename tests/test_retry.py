"""`runner retry`'s parts: the choice of jobs, the journal reset (real SQLite), the move of an
attempt's files to attempts/<id>/<n>/, job.json of a later attempt, and SHA256SUMS over both."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from runner.batch.retry import Retry, choose, set_aside, start_attempts
from runner.commands.status import render, status_document
from runner.engine.recovery import SENT_NOTE
from runner.errors import IllegalTransitionError, UsageError
from runner.lifecycle import Event, JobRecord, State, advance
from runner.remote import RemoteRef
from runner.store.journal import JobRow, Journal
from runner.store.results import BatchDir, render_sums, verify
from tests.test_results import END, START, make_plan


def _row(job_id: str, state: State, position: int = 0) -> JobRow:
    return JobRow(
        job_id=job_id,
        position=position,
        provider="spidra",
        type="scrape",
        state=state,
        remote=None,
        attempts=1,
        polls=0,
        next_poll_at=None,
        submitted_at=None,
        finished_at=None,
        raw_status=None,
        reason=None,
        progress=None,
        partial=False,
        results_ready=True,
        error=None,
        updated_at=0.0,
        notes={},
    )


ROWS = [
    _row("ok", State.SUCCEEDED),
    _row("bad", State.FAILED),
    _row("slow", State.TIMED_OUT),
    _row("gone", State.EXPIRED),
    _row("stopped", State.CANCELLED),
    _row("unsent", State.SKIPPED),
    _row("maybe", State.SUBMIT_UNKNOWN),
    _row("busy", State.RUNNING),
]


# -- choose ----------------------------------------------------------------------------------


def test_retry_takes_every_failed_timed_out_and_expired_job_and_nothing_else() -> None:
    retries, refused = choose(ROWS, {"slow": 2})
    assert retries == [
        Retry("bad", State.FAILED, 2),
        Retry("slow", State.TIMED_OUT, 3),
        Retry("gone", State.EXPIRED, 2),
    ]
    assert refused == []


def test_only_keeps_the_named_retriable_jobs_and_says_why_the_others_stay() -> None:
    only = ["ok", "gone", "stopped", "maybe", "busy", "gone"]
    retries, refused = choose(ROWS, {}, only)
    assert retries == [Retry("gone", State.EXPIRED, 2)]
    assert refused == [
        "ok succeeded: a succeeded job is never retried",
        "stopped is cancelled, not retried: retry re-runs failed, timed_out or expired jobs",
        "maybe is submit_unknown, not retried: it may exist remotely; "
        "runner resume --resubmit-unknown sends it again",
        "busy is running (not finished), not retried: it is continued instead",
    ]


def test_only_naming_a_job_the_batch_does_not_have_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"^--only: no job 'nope' in this batch$"):
        choose(ROWS, {}, ["bad", "nope"])


def test_an_attempt_is_set_aside_under_the_number_that_made_it() -> None:
    assert Retry("bad", State.FAILED, 2).previous == "attempts/bad/1"
    assert Retry("bad", State.FAILED, 5).previous == "attempts/bad/4"


# -- the journal -----------------------------------------------------------------------------


def _failed_journal(path: Path) -> tuple[Journal, JobRecord]:
    plan = make_plan(2)
    journal = Journal.create(path, plan, "b")
    job = JobRecord(spec=plan.jobs[0])
    for event, changes in (
        (Event.SUBMIT, {"attempts": 3}),
        (Event.RUNNING, {"remote": RemoteRef("sp-1", {"kind": "scrape"}), "submitted_at": 5.0}),
        (Event.FAILED, {"raw_status": "failed", "reason": "E42", "error": "the job failed"}),
    ):
        previous = job.state
        job.state = advance(previous, event)
        for name, value in changes.items():
            setattr(job, name, value)
        job.polls += 1
        journal.transition(job, event, previous)
    job.notes.update({SENT_NOTE: {"attempt": 3, "at": 4.0}, "squid": "abc"})
    journal.noted(job, SENT_NOTE)
    return journal, job


def test_reset_plans_the_job_again_with_a_clean_row_and_keeps_the_attempt(
    tmp_path: Path,
) -> None:
    journal, _ = _failed_journal(tmp_path / "journal.sqlite")
    state = journal.reset("job-0", Event.RETRY, {"attempt": 2, "previous": "attempts/job-0/1"})
    assert state is State.PLANNED
    row = journal.row("job-0")
    assert row is not None
    assert (row.state, row.remote, row.attempts, row.polls, row.notes) == (
        State.PLANNED,
        None,
        0,
        0,
        {},
    )
    assert (row.raw_status, row.reason, row.error, row.submitted_at, row.finished_at) == (
        None,
        None,
        None,
        None,
        None,
    )
    last = journal.events("job-0")[-1]
    assert (last.event, last.from_state, last.to_state) == ("retry", "failed", "planned")
    assert last.detail == {
        "attempt": 2,
        "previous": "attempts/job-0/1",
        "remote": {"id": "sp-1", "extra": {"kind": "scrape"}},
        "error": "the job failed",
    }
    assert journal.attempts() == {"job-0": 2}
    records = journal.load_records(make_plan(2))
    assert [(r.spec.id, r.state, r.attempt) for r in records] == [
        ("job-0", State.PLANNED, 2),
        ("job-1", State.PLANNED, 1),
    ]
    journal.close()


def test_a_succeeded_job_cannot_be_reset_and_its_row_stays(tmp_path: Path) -> None:
    plan = make_plan(1)
    journal = Journal.create(tmp_path / "journal.sqlite", plan, "b")
    job = JobRecord(spec=plan.jobs[0])
    for event in (Event.SUBMIT, Event.RUNNING, Event.FINISHED, Event.FETCHED):
        previous = job.state
        job.state = advance(previous, event)
        journal.transition(job, event, previous)
    with pytest.raises(IllegalTransitionError):
        journal.reset("job-0", Event.RETRY, {"attempt": 2})
    row = journal.row("job-0")
    assert row is not None
    assert row.state is State.SUCCEEDED
    assert journal.attempts() == {}
    journal.close()


# -- the files -------------------------------------------------------------------------------


def _finished_batch(root: Path) -> BatchDir:
    """job-0 failed (with a downloaded file), job-1 succeeded; sealed."""
    plan = make_plan(2)
    batch = BatchDir.create(root, plan, now=START)
    failed = batch.job_dir("job-0")
    failed.write_file("page.html", b"<html>first attempt</html>")
    failed.write_outcome(JobRecord(spec=plan.jobs[0], state=State.FAILED, error="E42"))
    done = batch.job_dir("job-1")
    done.append_item({"n": 1})
    done.write_outcome(JobRecord(spec=plan.jobs[1], state=State.SUCCEEDED))
    _seal(batch)
    return batch


def _seal(batch: BatchDir) -> None:
    batch.finish(counts={}, exit_code=1, started=START, ended=END, argv=["runner"], secrets=())


def test_set_aside_renames_the_job_directory_whole(tmp_path: Path) -> None:
    batch = _finished_batch(tmp_path)
    before = (batch.path / "jobs/job-0/job.json").read_bytes()
    set_aside(batch.path, Retry("job-0", State.FAILED, 2))
    assert not (batch.path / "jobs/job-0").exists()
    moved = batch.path / "attempts/job-0/1"
    assert (moved / "job.json").read_bytes() == before
    assert (moved / "files/page.html").read_bytes() == b"<html>first attempt</html>"


def test_set_aside_of_a_job_that_left_no_files_makes_an_empty_attempt(tmp_path: Path) -> None:
    batch = _finished_batch(tmp_path)
    set_aside(batch.path, Retry("never", State.FAILED, 2))
    assert list((batch.path / "attempts/never/1").iterdir()) == []


def test_set_aside_again_after_a_kill_drops_only_a_rewritten_job_json(tmp_path: Path) -> None:
    batch = _finished_batch(tmp_path)
    retry = Retry("job-0", State.FAILED, 2)
    set_aside(batch.path, retry)
    # killed before the journal commit; a resume then rewrote job.json in jobs/job-0/
    (batch.path / "jobs/job-0").mkdir()
    (batch.path / "jobs/job-0/job.json").write_text("{}\n")
    set_aside(batch.path, retry)
    assert not (batch.path / "jobs/job-0").exists()
    assert (batch.path / "attempts/job-0/1/files/page.html").exists()


def test_set_aside_never_deletes_results_it_did_not_make(tmp_path: Path) -> None:
    batch = _finished_batch(tmp_path)
    retry = Retry("job-0", State.FAILED, 2)
    set_aside(batch.path, retry)
    (batch.path / "jobs/job-0/files").mkdir(parents=True)
    (batch.path / "jobs/job-0/files/new.html").write_text("new")
    with pytest.raises(UsageError, match="both exist: move one of them out"):
        set_aside(batch.path, retry)
    assert (batch.path / "jobs/job-0/files/new.html").read_text() == "new"


def test_job_json_of_a_later_attempt_names_it_and_the_earlier_ones(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    spec = make_plan().jobs[0]
    batch.job_dir(spec.id).write_outcome(JobRecord(spec=spec, state=State.FAILED, attempt=3))
    document = json.loads((batch.path / "jobs/job-0/job.json").read_text())
    assert document["attempt"] == 3
    assert document["previous_attempts"] == ["attempts/job-0/1", "attempts/job-0/2"]
    other = make_plan().jobs[1]
    batch.job_dir(other.id).write_outcome(JobRecord(spec=other, state=State.FAILED))
    first = json.loads((batch.path / "jobs/job-1/job.json").read_text())
    assert "attempt" not in first
    assert "previous_attempts" not in first


def test_sums_cover_attempts_and_verify_checks_them(tmp_path: Path) -> None:
    batch = _finished_batch(tmp_path)
    set_aside(batch.path, Retry("job-0", State.FAILED, 2))
    _seal(batch)
    listed = [line.split("  ")[1] for line in render_sums(batch.path).decode().splitlines()]
    assert listed == [
        "attempts/job-0/1/files/page.html",
        "attempts/job-0/1/job.json",
        "jobs/job-1/job.json",
        "jobs/job-1/results.jsonl",
        "manifest.yaml",
    ]
    assert verify(batch.path) == []
    (batch.path / "attempts/job-0/1/files/page.html").write_bytes(b"tampered")
    assert verify(batch.path) == ["attempts/job-0/1/files/page.html: changed (sha256 differs)"]


# -- the two steps together ------------------------------------------------------------------


def test_start_attempts_moves_then_plans_and_finishes_a_retry_killed_in_between(
    tmp_path: Path,
) -> None:
    batch = _finished_batch(tmp_path)
    journal, _ = _failed_journal(batch.journal_path)
    set_aside(batch.path, Retry("job-0", State.FAILED, 2))  # a retry killed right here
    stderr = io.StringIO()
    retries = start_attempts(batch, journal, stderr=stderr)
    assert retries == [Retry("job-0", State.FAILED, 2)]
    assert stderr.getvalue() == "runner: retry: 1 job(s) to send again: job-0 (failed)\n"
    row = journal.row("job-0")
    assert row is not None
    assert row.state is State.PLANNED
    assert (batch.path / "attempts/job-0/1/files/page.html").exists()
    logged = [json.loads(line) for line in batch.log_path.read_text().splitlines()]
    assert [(e["event"], e["job_id"], e["attempt"]) for e in logged] == [
        ("job.retrying", "job-0", 2)
    ]
    # Nothing left to retry: said once, nothing moved, the journal unchanged.
    stderr = io.StringIO()
    assert start_attempts(batch, journal, stderr=stderr) == []
    assert stderr.getvalue() == (
        "runner: retry: nothing to retry (no job is failed, timed_out or expired)\n"
    )
    assert journal.attempts() == {"job-0": 2}
    journal.close()


def test_status_says_which_attempt_a_retried_job_is_on(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(2), now=START)
    journal, job = _failed_journal(batch.journal_path)
    journal.reset(job.spec.id, Event.RETRY, {"attempt": 2})
    journal.close()
    document = status_document(batch.path)
    assert [j["attempt"] for j in document["jobs"]] == [2, 1]
    assert "job-0  spidra    planned (attempt 2)" in render(document)
