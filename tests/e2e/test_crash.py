"""A real crash test: `runner run` SIGKILLed at random moments against a sandbox running in
another process, resumed each time, until it finishes; the sandbox's books then show exactly
one run started per job and every job ends succeeded."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e import shard_procs as procs

pytestmark = pytest.mark.e2e

JOBS = 24
KILLS = 6
SEED = 1
ROOT = Path(__file__).resolve().parents[2]
SCENARIO = {
    "time_scale": 10,
    # every answer takes 30 ms: kills often land between a request and its answer
    "providers": {"lobstr": {"duration": {"min": 2, "max": 6}, "latency": 0.03}},
}


def runner(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]


@pytest.fixture
def sandbox_process(tmp_path: Path) -> Iterator[str]:
    """`runner sandbox` in its own process; yields its origin (parsed from what it prints)."""
    with procs.sandbox_process(tmp_path, SCENARIO, seed=5) as origin:
        yield origin


def crash_manifest(tmp_path: Path) -> Path:
    # Lobstr runs on squids they create: the squid is noted the moment it exists, so after
    # a kill, reconcile lists exactly this job's runs (no clock comparison).
    document = {
        "version": 1,
        "name": "crash",
        "defaults": {"timeout": "60s", "poll": {"initial": "50ms", "max": "200ms"}},
        "providers": {
            "lobstr": {
                "api_key": "${LOBSTR_API_KEY}",
                "limits": {
                    "requests": {"rate": 200, "per": "1s"},
                    "submit": {"rate": 50, "per": "1s"},
                    "status": {"rate": 100, "per": "1s"},
                    "results": {"rate": 50, "per": "1s"},
                    "in_flight": 8,
                },
            }
        },
        "jobs": [
            {
                "id": "run-{n}",
                "provider": "lobstr",
                "type": "run",
                "each": [f"c{i}" for i in range(JOBS)],
                "params": {
                    "crawler": "maps",
                    "params": {"lang": "en"},
                    "tasks": [{"url": "https://maps.example/{item}"}],
                },
            }
        ],
    }
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def log_lines(batch: Path) -> int:
    try:
        return (batch / "log.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_progress(batch_of: Any, before: int, process: subprocess.Popen[str]) -> Path:
    """Block until the process has logged something beyond its start line (or ended)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.poll() is None:
        batch = batch_of()
        if batch is not None and log_lines(batch) >= before + 2:
            return batch  # type: ignore[no-any-return]
        time.sleep(0.005)
    batch = batch_of()
    assert batch is not None
    return batch  # type: ignore[no-any-return]


def test_sigkill_at_random_moments_then_resume_submits_each_job_once(
    tmp_path: Path, sandbox_process: str
) -> None:
    rng = random.Random(SEED)
    env = {**os.environ, "LOBSTR_API_KEY": "lobstr-crash-key"}
    out = tmp_path / "results"

    def batch_of() -> Path | None:
        found = [p for p in (out / "crash").glob("2*") if p.is_dir()]
        return found[0] if found else None

    command = runner("run", str(crash_manifest(tmp_path)), "--sandbox", sandbox_process)
    command += ["--out", str(out), "--quiet"]
    kills = 0
    for _ in range(KILLS):
        batch = batch_of()
        before = log_lines(batch) if batch is not None else 0
        process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        batch = wait_for_progress(batch_of, before, process)
        time.sleep(rng.uniform(0.0, 0.4))
        process.send_signal(signal.SIGKILL)
        if process.wait(timeout=10) != -signal.SIGKILL:
            break  # it finished before the kill landed
        kills += 1
        # Plain resume: a job killed while preparing its squid is proven unsent by the
        # adapter's reconcile (NotSubmittedError) and sent again; a lost POST /runs is
        # found on the job's own squid. Nothing is left submit_unknown.
        command = runner("resume", str(batch), "--sandbox", sandbox_process, "--quiet")
    assert kills >= 3, "the kills must land while the batch runs"
    batch = batch_of()
    assert batch is not None
    final = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    document = json.loads((batch / "batch.json").read_text())
    assert document["counts"] == {"succeeded": JOBS}
    assert document["exit_code"] == 0
    states = {
        p.name: json.loads((p / "job.json").read_text())["state"]
        for p in (batch / "jobs").iterdir()
    }
    assert states == {f"run-{n}": "succeeded" for n in range(1, JOBS + 1)}
    books = httpx.get(f"{sandbox_process}/_sandbox/stats").json()["providers"]["lobstr"]
    assert len(books["submits"]) == JOBS, books["submits"]  # one POST /runs body per job
    assert set(books["submits"].values()) == {1}
    verify = subprocess.run(runner("verify", str(batch)), cwd=ROOT, capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout
