"""Spidra scrape and Pulse extract end to end over real sockets, inside the real limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.cli import main
from runner.sandbox.server import RunningSandbox
from tests.e2e.helpers import manifest, pulse_jobs, run, spidra_jobs, submits_once, within_limit

pytestmark = pytest.mark.e2e

LIMITED = {
    "time_scale": 1.0,
    "defaults": {"duration": {"min": 0.05, "max": 0.3}},
    "providers": {
        "spidra": {"rate_limit": {"requests": 20, "per": "1s"}, "partial_rate": 0.5},
        # results of 200 bytes and more come back as {is_url: true, url}: single use
        "pulse": {"rate_limit": {"requests": 20, "per": "1s"}, "large_result_bytes": 200},
    },
}
DECLARED = {
    "spidra": {
        "api_key": "${SPIDRA_API_KEY}",
        "limits": {"requests": {"rate": 20, "per": "1s"}, "in_flight": 10},
    },
    "pulse": {
        "api_key": "${PULSE_API_KEY}",
        "limits": {"requests": {"rate": 20, "per": "1s"}},
    },
}


@pytest.mark.sandbox(seed=7, scenario=LIMITED)
def test_both_providers_complete_inside_the_declared_real_limit(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    path = manifest(tmp_path, [spidra_jobs(8), pulse_jobs(6)], providers=DECLARED)
    outcome = run(tmp_path, path, sandbox)
    assert outcome.code == 0, outcome.stderr
    assert set(outcome.states().values()) == {"succeeded"}
    assert len(outcome.states()) == 14
    for provider, jobs in (("spidra", 8), ("pulse", 6)):
        within_limit(outcome.books, provider)
        submits_once(outcome.books, provider, jobs)
    # Spidra: the inline result, partial where a URL or the AI extraction failed
    scrape = json.loads((outcome.batch / "jobs/s-1/result.json").read_text())
    assert {"content", "data", "stats"} <= set(scrape)
    partial = {}
    for i in range(1, 9):
        result = json.loads((outcome.batch / f"jobs/s-{i}/result.json").read_text())
        failed = result["ai_extraction_failed"] or not all(d["success"] for d in result["data"])
        partial[i] = outcome.job(f"s-{i}")["partial"]
        assert partial[i] == failed
    assert set(partial.values()) == {True, False}  # seed 7 gives both kinds
    # Pulse: the large result was downloaded at once, exactly once, into files/
    for i in range(1, 7):
        large = outcome.batch / f"jobs/p-{i}/files/result.json"
        assert "markdown" in json.loads(large.read_text())
        assert outcome.job(f"p-{i}")["notes"] == ["large result downloaded to files/result.json"]
    assert outcome.books["pulse"]["downloads"] == 6
    assert (outcome.batch / "SHA256SUMS").is_file()


def test_cli_run_with_an_in_process_sandbox_and_no_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SPIDRA_API_KEY", raising=False)
    monkeypatch.delenv("PULSE_API_KEY", raising=False)
    path = manifest(tmp_path, [spidra_jobs(2), pulse_jobs(2)])
    out = tmp_path / "results"
    code = main(["run", str(path), "--sandbox", "--out", str(out), "--only", "p-2"])
    err = capsys.readouterr().err
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0] == "runner: notice: SPIDRA_API_KEY is not set; using a sandbox key for spidra"
    assert lines[1] == "runner: notice: PULSE_API_KEY is not set; using a sandbox key for pulse"
    assert lines[-1].startswith("e2e ")
    assert ": 1 succeeded in " in lines[-1]
    assert [p.name for p in (out / "e2e" / "latest" / "jobs").iterdir()] == ["p-2"]


def test_cli_sandbox_url_must_be_a_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = manifest(tmp_path, [spidra_jobs(1)])
    assert main(["run", str(path), "--sandbox", "127.0.0.1:8000"]) == 2
    assert capsys.readouterr().err == (
        "runner: --sandbox: '127.0.0.1:8000' is not a URL like http://127.0.0.1:8000\n"
    )
