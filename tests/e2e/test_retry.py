"""`runner retry` end to end over real sockets: only the jobs that failed or timed out are
sent again (the sandbox's books count every submit), the earlier attempt's files are kept
under attempts/, the batch is sealed again and verifies, and a kill during a retry is
continued by `runner resume`."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.batch.run import resume_batch, retry_batch
from runner.cli import main
from runner.sandbox.server import RunningSandbox
from runner.store.journal import Journal
from tests.conftest import MakeSandbox
from tests.e2e.helpers import manifest, pulse_jobs, run

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PROVIDERS = {"pulse": {"api_key": "${PULSE_API_KEY}"}}
ENV = {"PULSE_API_KEY": "pulse_test"}
FLAKY = {"defaults": {"fail_rate": 0.5, "duration": {"min": 0.05, "max": 0.2}}}
SLOW = {"defaults": {"duration": {"min": 30, "max": 30}}}
QUICK = {"defaults": {"duration": {"min": 0.02, "max": 0.05}}}


def submits(sandbox: RunningSandbox) -> list[int]:
    """How many times each distinct submit body reached the sandbox, sorted."""
    books = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]["pulse"]
    return sorted(books["submits"].values())


def states(batch: Path) -> dict[str, str]:
    return {
        path.name: json.loads((path / "job.json").read_text())["state"]
        for path in sorted((batch / "jobs").iterdir())
    }


def outcome(batch: Path, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((batch / "jobs" / job_id / "job.json").read_text())
    return data


def retry(batch: Path, sandbox: RunningSandbox, *only: str) -> tuple[int, str]:
    stderr = io.StringIO()
    code = retry_batch(batch, only=only, sandbox=sandbox.origin, env=ENV, stderr=stderr)
    return code, stderr.getvalue()


def test_retry_sends_again_only_the_failed_jobs_and_keeps_their_first_attempt(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    sandbox = make_sandbox(seed=4, scenario=FLAKY)
    path = manifest(tmp_path, [pulse_jobs(8)], providers=PROVIDERS)
    first = run(tmp_path, path, sandbox, env=ENV)
    batch = first.batch
    before = states(batch)
    failed = sorted(job for job, state in before.items() if state == "failed")
    succeeded = sorted(job for job, state in before.items() if state == "succeeded")
    assert failed, before  # the seed's mix: some failed, some succeeded, nothing else
    assert succeeded, before
    assert len(failed) + len(succeeded) == 8, before
    assert first.code == 1
    first_files = {job: (batch / "jobs" / job / "job.json").read_bytes() for job in before}

    code, stderr = retry(batch, sandbox)

    assert f"runner: retry: {len(failed)} job(s) to send again: " in stderr
    # Each failed job was submitted a second time; no succeeded job was sent again.
    assert submits(sandbox) == [1] * len(succeeded) + [2] * len(failed)
    after = states(batch)
    assert code == (0 if set(after.values()) == {"succeeded"} else 1)
    for job in succeeded:
        assert (batch / "jobs" / job / "job.json").read_bytes() == first_files[job]
        assert not (batch / "attempts" / job).exists()
    for job in failed:
        kept = batch / "attempts" / job / "1" / "job.json"
        assert kept.read_bytes() == first_files[job]  # moved whole, not rewritten
        again = outcome(batch, job)
        assert (again["attempt"], again["previous_attempts"]) == (2, [f"attempts/{job}/1"])
    sums = (batch / "SHA256SUMS").read_text()
    assert all(f"  attempts/{job}/1/job.json\n" in sums for job in failed)
    assert main(["verify", str(batch)]) == 0
    sealed = json.loads((batch / "batch.json").read_text())
    assert sealed["exit_code"] == code
    assert sealed["counts"] == {
        state: list(after.values()).count(state)
        for state in ("succeeded", "failed")
        if state in after.values()
    }
    assert (batch.parent / "latest").resolve() == batch.resolve()
    with Journal.open(batch / "journal.sqlite", readonly=True) as journal:
        events = journal.events()
    retried = [(e.job_id, e.from_state, e.detail["attempt"]) for e in events if e.event == "retry"]
    assert retried == [(job, "failed", 2) for job in sorted(failed, key=lambda j: int(j[2:]))]
    log = [json.loads(line) for line in (batch / "log.jsonl").read_text().splitlines()]
    logged = [entry["event"] for entry in log]
    assert logged.count("job.retrying") == len(failed)
    assert "batch.retrying" in logged


def test_timed_out_jobs_retried_where_the_provider_is_now_quick(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    slow = make_sandbox(scenario=SLOW)
    path = manifest(tmp_path, [pulse_jobs(3)], providers=PROVIDERS, timeout="300ms")
    first = run(tmp_path, path, slow, env=ENV)
    assert set(first.states().values()) == {"timed_out"}
    batch = first.batch
    quick = make_sandbox(scenario=QUICK)

    code, _ = retry(batch, quick, "p-1")
    assert code == 1  # p-2 and p-3 are still timed_out
    assert states(batch) == {"p-1": "succeeded", "p-2": "timed_out", "p-3": "timed_out"}
    assert submits(quick) == [1]

    code, _ = retry(batch, quick)
    assert code == 0
    assert set(states(batch).values()) == {"succeeded"}
    assert submits(quick) == [1, 1, 1]  # p-1 was not sent again
    assert sorted(p.name for p in (batch / "attempts").iterdir()) == ["p-1", "p-2", "p-3"]
    assert json.loads((batch / "attempts/p-2/1/job.json").read_text())["state"] == "timed_out"
    assert main(["verify", str(batch)]) == 0


def test_a_succeeded_job_is_never_retried_even_when_named(
    tmp_path: Path,
    make_sandbox: MakeSandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sandbox = make_sandbox(scenario=QUICK)
    path = manifest(tmp_path, [pulse_jobs(2)], providers=PROVIDERS)
    first = run(tmp_path, path, sandbox, env=ENV)
    assert first.code == 0
    before = (first.batch / "jobs/p-1/job.json").read_bytes()
    monkeypatch.setenv("PULSE_API_KEY", "pulse_test")

    code = main(["retry", str(first.batch), "--only", "p-1", "--sandbox", sandbox.origin])

    assert code == 0
    assert "runner: retry: p-1 succeeded: a succeeded job is never retried\n" in (
        capsys.readouterr().err
    )
    assert submits(sandbox) == [1, 1]
    assert (first.batch / "jobs/p-1/job.json").read_bytes() == before
    assert not (first.batch / "attempts").exists()
    assert main(["retry", str(first.batch), "--only", "p-9", "--sandbox", sandbox.origin]) == 2
    assert capsys.readouterr().err == "runner: --only: no job 'p-9' in this batch\n"


def test_a_retry_killed_midway_is_continued_by_resume(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    # real seconds: the retried jobs are still running when the retry is killed
    sandbox = make_sandbox(
        seed=4, scenario={"defaults": {"fail_rate": 0.5, "duration": {"min": 1.5, "max": 2.0}}}
    )
    path = manifest(tmp_path, [pulse_jobs(6)], providers=PROVIDERS)
    batch = run(tmp_path, path, sandbox, env=ENV).batch
    failed = sorted(job for job, state in states(batch).items() if state == "failed")
    assert failed  # the seed's mix: some failed, some succeeded
    assert len(failed) < 6
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "retry", str(batch), "--sandbox", sandbox.origin],
        cwd=ROOT,
        env={**os.environ, **ENV},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while sum("submitted to pulse" in line for line in seen) < len(failed):
        assert time.monotonic() < deadline, seen
        assert process.poll() is None, seen
        seen.append(process.stderr.readline())
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    with Journal.open(batch / "journal.sqlite", readonly=True) as journal:
        left = {row.job_id: row.state.value for row in journal.rows() if row.job_id in failed}
    assert set(left.values()) <= {"queued", "running"}, left

    stderr = io.StringIO()
    code = resume_batch(batch, sandbox=sandbox.origin, env=ENV, stderr=stderr)

    after = states(batch)
    assert code == (0 if set(after.values()) == {"succeeded"} else 1), stderr.getvalue()
    # the retried jobs were polled after the kill, never sent a third time
    assert submits(sandbox) == [1] * (6 - len(failed)) + [2] * len(failed)
    for job in failed:
        assert outcome(batch, job)["attempt"] == 2
        assert (
            json.loads((batch / "attempts" / job / "1" / "job.json").read_text())["state"]
            == "failed"
        )
    assert main(["verify", str(batch)]) == 0
