"""Durable batches from the command line, over real sockets: the overlap lock, SIGINT and
SIGTERM on a real subprocess (detach, cancel, a second Ctrl-C), resume, cancel, --quiet,
and internal errors (exit 3, the traceback in the log)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.cli import main
from runner.sandbox.app import create_app
from runner.sandbox.scenario import Scenario
from runner.sandbox.server import RunningSandbox, serve_in_thread
from runner.store import lock
from runner.store.journal import Journal
from tests.e2e.helpers import sandbox_books

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PULSE_API_KEY": "pulse_durable_key"}
POLL = {"initial": "50ms", "max": "100ms", "multiplier": 1.5}
LIMITS = {"requests": {"rate": 100, "per": "1s"}}


def pulse_manifest(tmp: Path, n: int, *, on_interrupt: str = "detach", name: str = "dur") -> Path:
    document = {
        "version": 1,
        "name": name,
        "defaults": {"timeout": "60s", "poll": POLL},
        "providers": {
            "pulse": {"api_key": "${PULSE_API_KEY}", "limits": LIMITS, "on_interrupt": on_interrupt}
        },
        "jobs": [
            {
                "id": "p-{n}",
                "provider": "pulse",
                "type": "extract",
                "each": [f"d{i}" for i in range(n)],
                "params": {"file_url": "https://files.example/{item}.pdf"},
            }
        ],
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
def slow_sandbox() -> Iterator[RunningSandbox]:
    """Pulse jobs of 1-2 s (real time): still running when a signal arrives."""
    scenario = Scenario.from_dict({"defaults": {"duration": {"min": 1.0, "max": 2.0}}})
    with serve_in_thread(create_app(seed=3, scenario=scenario)) as running:
        yield running


def start(args: list[str], tmp: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=ROOT,
        env={**os.environ, **ENV},
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(process: subprocess.Popen[str], text: str, count: int = 1) -> list[str]:
    """Read stderr until `count` lines contain `text` (the jobs are running then)."""
    assert process.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 20
    while sum(text in line for line in seen) < count and time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen.append(line)
    return seen


def batch_dir(out: Path, name: str = "dur") -> Path:
    return next(p for p in (out / name).iterdir() if p.name != "latest")


def cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=ROOT,
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
    )


# -- signals ---------------------------------------------------------------------------------


def test_sigint_detaches_saves_state_and_resume_finishes_without_resubmitting(
    tmp_path: Path, slow_sandbox: RunningSandbox
) -> None:
    out = tmp_path / "results"
    manifest = pulse_manifest(tmp_path, 4)
    process = start(
        ["run", str(manifest), "--sandbox", slow_sandbox.origin, "--out", str(out)], tmp_path
    )
    wait_for_line(process, "submitted to pulse", count=4)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=20)
    assert process.returncode == 130, rest
    batch = batch_dir(out)
    assert rest.splitlines()[-2] == (
        f"runner: interrupted by SIGINT; state saved. Continue with: runner resume {batch}"
    )
    document = json.loads((batch / "batch.json").read_text())
    assert document["exit_code"] == 130
    with Journal.open(batch / "journal.sqlite", readonly=True) as journal:
        states = {row.job_id: row.state.value for row in journal.rows()}
    assert set(states.values()) <= {"queued", "running", "succeeded"}, states
    assert "runner resume" in rest
    log = [json.loads(line)["event"] for line in (batch / "log.jsonl").read_text().splitlines()]
    assert log[0] == "batch.started"
    assert "batch.interrupting" in log
    assert log[-1] == "batch.interrupted"
    assert (
        sandbox_books(slow_sandbox, "pulse")["requests"].get("DELETE /job/{job_id}") is None
    )  # detached

    resumed = cli(["resume", str(batch), "--sandbox", slow_sandbox.origin, "--quiet"])
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stderr.splitlines()[-1].startswith("dur ")  # quiet: the summary line only
    assert len(resumed.stderr.splitlines()) == 1
    assert json.loads((batch / "batch.json").read_text())["counts"] == {"succeeded": 4}
    submits = sandbox_books(slow_sandbox, "pulse")["submits"]
    assert len(submits) == 4
    assert set(submits.values()) == {1}
    assert cli(["verify", str(batch)]).returncode == 0

    again = cli(["resume", str(batch), "--sandbox", slow_sandbox.origin, "--quiet"])
    assert again.returncode == 0  # a finished batch: nothing to do, the same exit code
    assert len(sandbox_books(slow_sandbox, "pulse")["submits"]) == 4


def test_sigterm_with_on_interrupt_cancel_cancels_the_remote_jobs(
    tmp_path: Path, slow_sandbox: RunningSandbox
) -> None:
    out = tmp_path / "results"
    manifest = pulse_manifest(tmp_path, 3, on_interrupt="cancel")
    process = start(
        ["run", str(manifest), "--sandbox", slow_sandbox.origin, "--out", str(out)], tmp_path
    )
    wait_for_line(process, "submitted to pulse", count=3)
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=20)
    assert process.returncode == 143, rest
    batch = batch_dir(out)
    states = {
        p.name: json.loads((p / "job.json").read_text())["state"]
        for p in (batch / "jobs").iterdir()
    }
    assert set(states.values()) <= {"cancelled", "succeeded"}
    cancelled = [job for job, state in states.items() if state == "cancelled"]
    assert cancelled, states
    assert sandbox_books(slow_sandbox, "pulse")["requests"]["DELETE /job/{job_id}"] == len(
        cancelled
    )
    error = json.loads((batch / "jobs" / cancelled[0] / "job.json").read_text())["error"]
    assert error == "cancelled remotely on interrupt (on_interrupt: cancel)"


def test_a_second_ctrl_c_exits_at_once_with_the_journal_intact(tmp_path: Path) -> None:
    # Every answer takes 0.4 s: the cancels after the first Ctrl-C are still under way.
    scenario = Scenario.from_dict(
        {"defaults": {"duration": {"min": 5, "max": 6}}, "providers": {"pulse": {"latency": 0.4}}}
    )
    with serve_in_thread(create_app(scenario=scenario)) as sandbox:
        out = tmp_path / "results"
        manifest = pulse_manifest(tmp_path, 2, on_interrupt="cancel")
        args = ["run", str(manifest), "--sandbox", sandbox.origin, "--out", str(out)]
        process = start(args, tmp_path)
        wait_for_line(process, "submitted to pulse", count=2)
        process.send_signal(signal.SIGINT)
        wait_for_line(process, "press Ctrl-C again")
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=20)
        assert process.returncode == 130
        batch = batch_dir(out)
        assert rest.splitlines()[-1] == (
            "runner: SIGINT again: exited at once; the journal is intact. "
            f"Continue with: runner resume {batch}"
        )
        with Journal.open(batch / "journal.sqlite", readonly=True) as journal:
            assert len(journal.remote_ids()) == 2
            # it did not wait for the cancels' answers: the jobs are still where they were
            assert set(journal.counts()) <= {"queued", "running"}
        events = [json.loads(line)["event"] for line in (batch / "log.jsonl").open()]
        assert "batch.interrupting" in events
        assert events[-1] == "batch.aborted"
        assert "job.cancelled" not in events
        sealed = json.loads((batch / "batch.json").read_text())  # written at the start
        assert sealed["ended"] is None  # not sealed: `runner resume` does that
        assert sealed["exit_code"] is None


# -- lock, cancel, internal errors -----------------------------------------------------------


def test_a_second_run_of_the_same_manifest_exits_4_naming_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PULSE_API_KEY", "k")
    out = tmp_path / "results"
    manifest = pulse_manifest(tmp_path, 1)
    with lock.acquire(out, "dur") as held:
        code = main(["run", str(manifest), "--sandbox", "--out", str(out)])
    assert code == 4
    started = held.started.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert capsys.readouterr().err == (
        f"runner: another run of 'dur' is running (pid {os.getpid()}, started {started}); "
        f"wait for it to finish, or stop it with: kill {os.getpid()}\n"
    )
    assert not (out / "dur").exists() or list((out / "dur").iterdir()) == []


def test_cancel_cancels_what_a_detached_run_left_running(
    tmp_path: Path, slow_sandbox: RunningSandbox
) -> None:
    out = tmp_path / "results"
    manifest = pulse_manifest(tmp_path, 5)
    document = yaml.safe_load(manifest.read_text())
    document["providers"]["pulse"]["limits"]["in_flight"] = 2  # 3 never submitted
    manifest.write_text(yaml.safe_dump(document))
    process = start(
        ["run", str(manifest), "--sandbox", slow_sandbox.origin, "--out", str(out)], tmp_path
    )
    wait_for_line(process, "submitted to pulse", count=2)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=20)
    assert process.returncode == 143
    batch = batch_dir(out)

    with lock.acquire(out, "dur"):  # while "running": cancel refuses, names the holder
        held = cli(["cancel", str(batch), "--sandbox", slow_sandbox.origin])
    assert held.returncode == 4
    assert held.stderr.startswith("runner: another run of 'dur' is running (pid ")

    done = cli(["cancel", str(batch), "--sandbox", slow_sandbox.origin])
    assert done.returncode == 0, done.stderr
    counts = json.loads((batch / "batch.json").read_text())["counts"]
    assert counts.get("skipped") == 3
    assert counts.get("cancelled", 0) + counts.get("succeeded", 0) == 2
    assert sandbox_books(slow_sandbox, "pulse")["requests"].get(
        "DELETE /job/{job_id}", 0
    ) == counts.get("cancelled", 0)
    assert len(sandbox_books(slow_sandbox, "pulse")["submits"]) == 2  # cancel never submits
    skipped = json.loads((batch / "jobs" / "p-5" / "job.json").read_text())
    assert skipped["error"] == "not submitted: the batch was cancelled (runner cancel)"


def test_an_internal_error_exits_3_naming_the_log_which_has_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from runner.engine.engine import Engine

    async def broken(self: Engine, *args: Any) -> None:
        raise ZeroDivisionError("a bug in the engine")

    monkeypatch.setattr(Engine, "_fetch", broken)
    monkeypatch.setenv("PULSE_API_KEY", "pulse_secret_value")
    out = tmp_path / "results"
    code = main(["run", str(pulse_manifest(tmp_path, 1)), "--sandbox", "--out", str(out)])
    assert code == 3
    batch = batch_dir(out)
    err = capsys.readouterr().err.splitlines()
    assert err[-2:] == [  # an in-process sandbox died with the run: the hint starts over
        "runner: internal error: ZeroDivisionError: a bug in the engine",
        f"runner: the traceback is in {batch}/log.jsonl; the in-process sandbox ended with "
        f"this run; start over with: runner run {tmp_path / 'dur.yaml'} --sandbox --out {out}",
    ]
    last = json.loads((batch / "log.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "batch.internal_error"
    assert "Traceback" in last["exception"]
    assert 'raise ZeroDivisionError("a bug in the engine")' in last["exception"]
    assert "pulse_secret_value" not in (batch / "log.jsonl").read_text()
