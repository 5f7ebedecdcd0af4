"""`runner run` output modes: one line per notable event when not a TTY, the summary alone
with --quiet (cron), and the results directory complete either way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.cli import main
from tests.e2e.helpers import manifest, pulse_jobs

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPIDRA_API_KEY", "spd_cli")
    monkeypatch.setenv("PULSE_API_KEY", "pulse_cli")


def test_quiet_prints_only_the_summary_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = manifest(tmp_path, [pulse_jobs(2)])
    out = tmp_path / "results"
    assert main(["run", str(path), "--sandbox", "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    batch = (out / "e2e" / "latest").resolve()
    assert lines[0].startswith(f"e2e {batch.name}: 2 succeeded in ")
    assert lines[0].endswith(f"; results in {out / 'e2e' / batch.name} (exit 0)")
    events = [json.loads(line)["event"] for line in (batch / "log.jsonl").open()]
    assert events[0] == "batch.started"
    assert events[-1] == "batch.finished"
    assert events.count("job.submitted") == 2
    assert events.count("job.succeeded") == 2


def test_without_a_tty_each_notable_event_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = manifest(tmp_path, [pulse_jobs(1)])
    assert main(["run", str(path), "--sandbox", "--out", str(tmp_path / "r")]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("p-1 submitted to pulse (remote id ")
    assert lines[1] == "p-1 succeeded"
    assert lines[2].startswith("e2e ")
    assert len(lines) == 3


def test_an_invalid_manifest_lists_every_problem_then_says_nothing_was_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\nname: x\njobs: []\nprovidrs: {}\n")
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:3:7: jobs: must not be empty (at least 1 item)",
        f"{path}:4:1: unknown key 'providrs'; did you mean 'providers'?",
        "2 problems; nothing was sent",
    ]
    assert not (tmp_path / "out").exists()
