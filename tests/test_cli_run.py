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
