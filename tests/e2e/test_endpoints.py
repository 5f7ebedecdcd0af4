"""A batch remembers where it ran: `resume` and `cancel` go back to the recorded endpoints
without any flag, a re-point is refused while jobs live at the old ones, an in-process
sandbox batch says what can be done, and every printed hint works when pasted.

A second sandbox stands in for "the provider's real host" (the manifest's `base_url`), so a
request that would have gone to a real provider is counted instead of sent.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from runner.cli import main
from runner.lifecycle import Event, advance
from runner.manifest.loader import load_manifest
from runner.remote import RemoteRef
from runner.sandbox.app import create_app
from runner.sandbox.scenario import Scenario
from runner.sandbox.server import RunningSandbox, sandbox_base_urls, serve_in_thread
from runner.store.journal import Journal
from runner.store.results import BatchDir, Endpoints

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KEY = "pulse_endpoint_key"
POLL = {"initial": "50ms", "max": "100ms", "multiplier": 1.5}


@pytest.fixture
def slow() -> Iterator[RunningSandbox]:
    """Pulse jobs of 1.5-2.5 s: still running when the run is killed."""
    scenario = Scenario.from_dict({"defaults": {"duration": {"min": 1.5, "max": 2.5}}})
    with serve_in_thread(create_app(seed=4, scenario=scenario)) as running:
        yield running


@pytest.fixture
def decoy() -> Iterator[RunningSandbox]:
    """Stands for the provider's real host: the manifest's base_url."""
    with serve_in_thread(create_app(seed=9)) as running:
        yield running


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_API_KEY", KEY)


def requests(sandbox: RunningSandbox) -> int:
    stats = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]["pulse"]
    return sum(stats["requests"].values())


def submits(sandbox: RunningSandbox) -> dict[str, int]:
    stats = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]["pulse"]
    return stats["submits"]  # type: ignore[no-any-return]


def write_manifest(tmp: Path, n: int, base_url: str, *, on_interrupt: str = "detach") -> Path:
    document = {
        "version": 1,
        "name": "ep",
        "defaults": {"timeout": "60s", "poll": POLL},
        "providers": {
            "pulse": {
                "api_key": "${PULSE_API_KEY}",
                "base_url": base_url,
                "on_interrupt": on_interrupt,
            }
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
    path = tmp / "ep.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=ROOT,
        env={**os.environ, "PULSE_API_KEY": KEY},
        capture_output=True,
        text=True,
    )


def start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=ROOT,
        env={**os.environ, "PULSE_API_KEY": KEY},
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(process: subprocess.Popen[str], text: str, count: int) -> None:
    assert process.stderr is not None
    seen = 0
    deadline = time.monotonic() + 20
    while seen < count and time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen += text in line
    assert seen == count


def only_batch(out: Path) -> Path:
    return next(p for p in (out / "ep").iterdir() if p.name != "latest")


def info(batch: Path) -> dict[str, Any]:
    return json.loads((batch / "batch.json").read_text())  # type: ignore[no-any-return]


def planted(
    tmp: Path, manifest: Path, endpoints: Endpoints, *, running: int = 0, submitting: int = 0
) -> Path:
    """A batch as a killed run leaves it: batch.json (written at start) and a journal with
    `running` jobs holding remote ids, `submitting` jobs mid-submit, the rest planned."""
    plan = load_manifest(manifest).plan
    started = datetime(2026, 11, 22, 3, 0, 0, tzinfo=UTC)
    batch = BatchDir.create(tmp / "results", plan, now=started)
    batch.write_info(started=started, argv=["runner"], secrets=plan.secrets, endpoints=endpoints)
    journal = Journal.create(batch.journal_path, plan, batch.batch_id)
    journal.set_meta("source", str(manifest.resolve()))
    records = journal.load_records(plan)
    for number, record in enumerate(records[: running + submitting]):
        previous = record.state
        record.state = advance(record.state, Event.SUBMIT)
        journal.transition(record, Event.SUBMIT, previous)
        if number < running:
            record.remote, record.raw_status = RemoteRef(f"job_{number}"), "pending"
            previous = record.state
            record.state = advance(record.state, Event.RUNNING)
            journal.transition(record, Event.RUNNING, previous)
    journal.close()
    return batch.path


# -- the bug: resume after a kill -------------------------------------------------------------


def test_batch_json_records_the_endpoints_from_the_start(
    tmp_path: Path, slow: RunningSandbox, decoy: RunningSandbox
) -> None:
    out = tmp_path / "results"
    manifest = write_manifest(tmp_path, 2, decoy.origin)
    process = start(["run", str(manifest), "--sandbox", slow.origin, "--out", str(out)])
    wait_for(process, "submitted to pulse", 2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    document = info(only_batch(out))
    assert document["endpoints"] == {"pulse": slow.origin}
    assert document["sandbox"] == slow.origin
    assert document["ended"] is None
    assert document["exit_code"] is None
    assert document["counts"] is None


def test_a_killed_batch_resumes_at_its_sandbox_without_any_flag(
    tmp_path: Path, slow: RunningSandbox, decoy: RunningSandbox
) -> None:
    out = tmp_path / "my results"  # a space: hints must quote it
    manifest = write_manifest(tmp_path, 3, decoy.origin)
    process = start(["run", str(manifest), "--sandbox", slow.origin, "--out", str(out)])
    wait_for(process, "submitted to pulse", 3)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL
    batch = only_batch(out)

    assert main(["resume", str(out / "ep"), "--quiet"]) == 0  # results/<name>: its newest
    assert requests(decoy) == 0  # nothing went to "the real provider"
    assert len(submits(slow)) == 3
    assert set(submits(slow).values()) == {1}
    document = info(batch)
    assert document["counts"] == {"succeeded": 3}
    assert document["exit_code"] == 0
    assert document["endpoints"] == {"pulse": slow.origin}


def test_the_interrupt_hint_works_when_pasted(
    tmp_path: Path, slow: RunningSandbox, decoy: RunningSandbox
) -> None:
    out = tmp_path / "my results"
    manifest = write_manifest(tmp_path, 3, decoy.origin)
    process = start(["run", str(manifest), "--sandbox", slow.origin, "--out", str(out)])
    wait_for(process, "submitted to pulse", 3)
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=20)
    assert process.returncode == 130, rest
    batch = only_batch(out)
    hint = rest.splitlines()[-2]
    assert hint == (
        "runner: interrupted by SIGINT; state saved. "
        f"Continue with: runner resume {shlex.quote(str(batch))}"
    )
    command = shlex.split(hint.split("Continue with: ", 1)[1])
    pasted = cli([*command[1:], "--quiet"])
    assert pasted.returncode == 0, pasted.stderr
    assert requests(decoy) == 0
    assert info(batch)["counts"] == {"succeeded": 3}


def test_cancel_goes_to_the_recorded_endpoints(
    tmp_path: Path, slow: RunningSandbox, decoy: RunningSandbox
) -> None:
    out = tmp_path / "results"
    manifest = write_manifest(tmp_path, 2, decoy.origin)
    process = start(["run", str(manifest), "--sandbox", slow.origin, "--out", str(out)])
    wait_for(process, "submitted to pulse", 2)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    batch = only_batch(out)
    done = cli(["cancel", str(batch)])
    assert done.returncode == 0, done.stderr
    assert requests(decoy) == 0
    stats = httpx.get(f"{slow.origin}/_sandbox/stats").json()["providers"]["pulse"]
    cancelled = info(batch)["counts"].get("cancelled", 0)
    assert stats["requests"].get("DELETE /job/{job_id}", 0) == cancelled


# -- re-pointing --------------------------------------------------------------------------------


def test_a_re_point_is_refused_while_jobs_live_at_the_old_endpoint(
    tmp_path: Path,
    slow: RunningSandbox,
    decoy: RunningSandbox,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = write_manifest(tmp_path, 3, decoy.origin)
    endpoints = Endpoints({"pulse": slow.origin}, sandbox=slow.origin)
    batch = planted(tmp_path, manifest, endpoints, running=1, submitting=1)
    for flag in (["--endpoint", f"pulse={decoy.origin}"], ["--sandbox", decoy.origin]):
        assert main(["resume", str(batch), *flag]) == 2
        assert capsys.readouterr().err == (
            f"runner: {' '.join(flag)}: 2 pulse jobs of this batch are at {slow.origin} "
            "(remote ids there, or submits that may have reached it), so pulse cannot move; "
            f"continue where they are with: runner resume {batch}\n"
        )
    assert requests(decoy) == 0
    assert requests(slow) == 0
    assert info(batch)["endpoints"] == {"pulse": slow.origin}


def test_a_re_point_without_remote_jobs_is_recorded_and_used(
    tmp_path: Path, slow: RunningSandbox, decoy: RunningSandbox
) -> None:
    manifest = write_manifest(tmp_path, 2, decoy.origin)
    gone = "http://127.0.0.1:9"  # the sandbox it ran on is gone; nothing was submitted
    batch = planted(tmp_path, manifest, Endpoints({"pulse": gone}, sandbox=gone))
    assert main(["resume", str(batch), "--sandbox", slow.origin, "--quiet"]) == 0
    assert len(submits(slow)) == 2
    assert requests(decoy) == 0
    document = info(batch)
    assert document["endpoints"] == {"pulse": slow.origin}
    assert document["sandbox"] == slow.origin


def test_an_unknown_provider_in_endpoint_is_a_usage_error(
    tmp_path: Path, decoy: RunningSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path, 1, decoy.origin)
    batch = planted(tmp_path, manifest, Endpoints({"pulse": decoy.origin}))
    assert main(["resume", str(batch), "--endpoint", "nope=http://x.example"]) == 2
    assert capsys.readouterr().err == (
        "runner: --endpoint nope=http://x.example: this batch has no provider 'nope' "
        "(it has: pulse)\n"
    )


def test_a_recorded_sandbox_that_does_not_answer_is_one_line(
    tmp_path: Path, decoy: RunningSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path, 1, decoy.origin)
    gone = "http://127.0.0.1:9"
    batch = planted(tmp_path, manifest, Endpoints({"pulse": gone}, sandbox=gone), running=1)
    assert main(["resume", str(batch)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"runner: {batch} ran against the sandbox at {gone}, which does not answer "
        "(connection refused); start it again there with: runner sandbox --port 9\n"
    )
    assert requests(decoy) == 0


# -- the in-process sandbox ---------------------------------------------------------------------


def test_resuming_an_in_process_sandbox_batch_says_what_can_be_done(
    tmp_path: Path, decoy: RunningSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path, 3, decoy.origin)
    dead = sandbox_base_urls("http://127.0.0.1:9")
    endpoints = Endpoints({"pulse": dead["pulse"]}, sandbox="in-process")
    batch = planted(tmp_path, manifest, endpoints, running=2)
    before = (batch / "batch.json").read_bytes()
    for command in ("resume", "cancel"):
        assert main([command, str(batch)]) == 2
        assert capsys.readouterr().err == (
            f"runner: {batch} ran on an in-process sandbox, which ended with that run: "
            "its 3 unfinished jobs cannot be reached, and nothing was sent; start over with: "
            f"runner run {manifest.resolve()} --sandbox --out {tmp_path / 'results'}\n"
        )
    assert requests(decoy) == 0
    assert (batch / "batch.json").read_bytes() == before
