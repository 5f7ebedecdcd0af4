"""`runner verify DIR` and `runner status DIR [--json]`: exact output and exit codes."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner.cli import main
from runner.lifecycle import Event, JobRecord, advance
from runner.remote import RemoteRef
from runner.store.journal import Journal
from runner.store.lock import acquire
from runner.store.results import BatchDir
from tests.test_results import END, START, make_plan


def _finished(root: Path) -> BatchDir:
    plan = make_plan(2)
    batch = BatchDir.create(root, plan, now=START)
    for spec in plan.jobs:
        batch.job_dir(spec.id).write_result({"id": spec.id})
    batch.finish(
        counts={"succeeded": 2}, exit_code=0, started=START, ended=END, argv=[], secrets=()
    )
    return batch


def _live(root: Path) -> BatchDir:
    """A batch in the middle of a run: one job running, one failed, one planned."""
    plan = make_plan(3)
    batch = BatchDir.create(root, plan, now=START)
    journal = Journal.create(batch.journal_path, plan, batch.batch_id)
    records = journal.load_records(plan)

    def move(job: JobRecord, event: Event) -> None:
        previous = job.state
        job.state = advance(job.state, event)
        journal.transition(job, event, previous)

    running, failed, _ = records
    move(running, Event.SUBMIT)
    running.remote, running.raw_status = RemoteRef("sp-1"), "running"
    move(running, Event.RUNNING)
    move(failed, Event.SUBMIT)
    failed.raw_status, failed.reason = "failed", "TIMEOUT"
    failed.error = "the provider failed the job: TIMEOUT"
    failed.remote = RemoteRef("sp-2")
    move(failed, Event.FAILED)
    journal.close()
    return batch


def test_verify_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    batch = _finished(tmp_path)
    assert main(["verify", str(batch.path)]) == 0  # 2 results and manifest.yaml
    assert capsys.readouterr().out == f"{batch.path}: OK (3 files)\n"


def test_verify_reports_tampering_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = _finished(tmp_path)
    (batch.path / "jobs/job-0/result.json").write_text('{"id": "forged"}\n')
    assert main(["verify", str(tmp_path / "nightly" / "latest")]) == 1
    assert capsys.readouterr().out == (
        f"{tmp_path / 'nightly' / 'latest'}: 1 problem\n"
        "  jobs/job-0/result.json: changed (sha256 differs)\n"
    )


def test_verify_of_something_else_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"runner: {tmp_path} is not a batch directory (no manifest.yaml); give "
        "results/<name>/<batch-id>, results/<name>/latest or results/<name>\n"
    )


def test_status_of_a_live_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    batch = _live(tmp_path)
    lock = acquire(tmp_path, "nightly", now=datetime(2026, 11, 22, 3, 0, tzinfo=UTC))
    lock.note_batch(batch.batch_id)
    try:
        assert main(["status", str(batch.path)]) == 0
    finally:
        lock.release()
    assert capsys.readouterr().out == (
        f"{batch.path}: batch 20261122T030000Z of 'nightly', "
        f"running (pid {os.getpid()}, started 2026-11-22T03:00:00Z)\n"
        "3 jobs: 1 planned, 1 running, 1 failed\n"
        "\n"
        "ID     PROVIDER  STATE    STATUS   REASON\n"
        "job-0  spidra    running  running  -\n"
        "job-1  spidra    failed   failed   TIMEOUT\n"
        "job-2  spidra    planned  -        -\n"
        "\n"
        "job-1: the provider failed the job: TIMEOUT\n"
    )


def test_status_json_is_canonical(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    batch = _live(tmp_path)
    assert main(["status", str(batch.path), "--json"]) == 0
    out = capsys.readouterr().out
    document = json.loads(out)
    assert out == json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert document["running"] is False
    assert document["run"] == "not running"
    assert document["lock"] is None
    assert document["counts"] == {"planned": 1, "running": 1, "failed": 1}
    assert document["jobs"][1] == {
        "attempt": 1,
        "attempts": 0,
        "error": "the provider failed the job: TIMEOUT",
        "id": "job-1",
        "polls": 0,
        "provider": "spidra",
        "provider_status": "failed",
        "reason": "TIMEOUT",
        "remote_id": "sp-2",
        "reused_from": None,
        "state": "failed",
        "type": "scrape",
    }


def test_status_names_another_batch_holding_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = _live(tmp_path)
    with acquire(tmp_path, "nightly", now=datetime(2026, 11, 23, 3, 0, tzinfo=UTC)) as lock:
        lock.note_batch("20261123T030000Z")
        assert main(["status", str(batch.path)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        f"{batch.path}: batch 20261122T030000Z of 'nightly', not running "
        f"(run 20261123T030000Z of 'nightly' holds the lock: "
        f"pid {os.getpid()}, started 2026-11-23T03:00:00Z)"
    )


def test_status_without_a_journal_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    assert main(["status", str(batch.path)]) == 2
    assert capsys.readouterr().err == (
        f"runner: {batch.path} has no readable journal: no journal at {batch.journal_path}\n"
    )
