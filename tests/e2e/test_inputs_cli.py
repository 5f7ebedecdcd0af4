"""`each:` files belong to the batch, from the command line over real sockets: a resumed
batch submits what its copies say (the original CSV edited or deleted meanwhile), refuses
a tampered copy, and `runner verify` reports an edited manifest.yaml or input copy."""

from __future__ import annotations

import hashlib
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

from runner.batch.run import run_batch
from runner.cli import main
from runner.sandbox.app import create_app
from runner.sandbox.determinism import body_key
from runner.sandbox.scenario import Scenario
from runner.sandbox.server import RunningSandbox, serve_in_thread
from runner.store.journal import Journal
from tests.e2e.helpers import sandbox_books

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PULSE_API_KEY": "pulse_inputs_key"}
POLL = {"initial": "50ms", "max": "100ms", "multiplier": 1.5}
DOCS = ["alpha", "beta", "gamma", "delta"]


def write_inputs(tmp: Path, *, in_flight: int = 1) -> Path:
    """A manifest in tmp/ whose one job takes its items from tmp/data/items.csv."""
    (tmp / "data").mkdir()
    (tmp / "data" / "items.csv").write_text(
        "doc,pages\n" + "".join(f"{d},{len(d)}\n" for d in DOCS)
    )
    document = {
        "version": 1,
        "name": "inp",
        "defaults": {"timeout": "60s", "poll": POLL},
        "providers": {
            "pulse": {
                "api_key": "${PULSE_API_KEY}",
                "limits": {"requests": {"rate": 100, "per": "1s"}, "in_flight": in_flight},
            }
        },
        "jobs": [
            {
                "id": "p-{n}",
                "provider": "pulse",
                "type": "extract",
                "each": {"file": "data/items.csv"},
                "params": {"file_url": "https://files.example/{doc}.pdf", "pages": "{pages}"},
            }
        ],
    }
    path = tmp / "inp.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def expected_submits(docs: list[str]) -> set[str]:
    """The sandbox's book keys of the Pulse submits made from these CSV rows."""
    return {
        body_key(
            {"file_url": f"https://files.example/{d}.pdf", "pages": str(len(d)), "async": True}
        )
        for d in docs
    }


@pytest.fixture
def slow_sandbox() -> Iterator[RunningSandbox]:
    """Pulse jobs of 1-2 s (real time): still running when the signal arrives."""
    scenario = Scenario.from_dict({"defaults": {"duration": {"min": 1.0, "max": 2.0}}})
    with serve_in_thread(create_app(seed=5, scenario=scenario)) as running:
        yield running


def cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=ROOT,
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
    )


def interrupted_run(tmp: Path, sandbox: RunningSandbox) -> Path:
    """`runner run` stopped by SIGINT after its first submit: 3 jobs never sent."""
    manifest = write_inputs(tmp)
    out = tmp / "results"
    args = ["run", str(manifest), "--sandbox", sandbox.origin, "--out", str(out)]
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=ROOT,
        env={**os.environ, **ENV},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line or "submitted to pulse" in line:
            break
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=20)
    assert process.returncode == 130, rest
    batch = next(p for p in (out / "inp").iterdir() if p.name != "latest")
    with Journal.open(batch / "journal.sqlite", readonly=True) as journal:
        assert journal.counts().get("planned", 0) >= 2, journal.counts()
    return batch


@pytest.mark.parametrize("change", ["edit", "delete"])
def test_resume_submits_what_the_batch_copied_whatever_became_of_the_original_csv(
    tmp_path: Path, slow_sandbox: RunningSandbox, change: str
) -> None:
    batch = interrupted_run(tmp_path, slow_sandbox)
    original = tmp_path / "data" / "items.csv"
    if change == "edit":  # same number of rows, so the ids p-1..p-4 would still match
        original.write_text("doc,pages\nzulu,1\nyankee,2\nxray,3\nwhiskey,4\n")
    else:
        original.unlink()

    resumed = cli(["resume", str(batch), "--sandbox", slow_sandbox.origin, "--quiet"])

    assert resumed.returncode == 0, resumed.stderr
    submits = sandbox_books(slow_sandbox, "pulse")["submits"]
    assert set(submits) == expected_submits(DOCS)
    assert set(submits.values()) == {1}
    assert json.loads((batch / "batch.json").read_text())["counts"] == {"succeeded": 4}


def test_batch_json_and_the_journal_record_each_input_copy_and_its_sha256(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    manifest = write_inputs(tmp_path, in_flight=4)
    data = (tmp_path / "data" / "items.csv").read_bytes()
    out = tmp_path / "results"
    assert run_batch(manifest, out=out, sandbox=sandbox.origin, env=ENV, quiet=True) == 0
    batch = (out / "inp" / "latest").resolve()
    recorded = {
        "data/items.csv": {"copy": "inputs/items.csv", "sha256": hashlib.sha256(data).hexdigest()}
    }
    assert (batch / "inputs" / "items.csv").read_bytes() == data
    assert json.loads((batch / "batch.json").read_text())["inputs"] == recorded
    with Journal.open(batch / "journal.sqlite", readonly=True) as journal:
        assert json.loads(journal.meta()["inputs"]) == recorded
    assert set(sandbox_books(sandbox, "pulse")["submits"]) == expected_submits(DOCS)


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ("edit", "its copy of input 'data/items.csv' (inputs/items.csv) has changed since "
         "the batch started (sha256 differs)"),
        ("delete", "its copy of input 'data/items.csv' (inputs/items.csv) is missing"),
        ("manifest", "its manifest.yaml has changed since the batch started (sha256 differs)"),
    ],
)  # fmt: skip
def test_resume_refuses_a_tampered_copy_in_one_line_naming_it(
    tmp_path: Path,
    sandbox: RunningSandbox,
    change: str,
    what: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = write_inputs(tmp_path, in_flight=4)
    out = tmp_path / "results"
    assert run_batch(manifest, out=out, sandbox=sandbox.origin, env=ENV, quiet=True) == 0
    batch = (out / "inp" / "latest").resolve()
    copy = batch / "inputs" / "items.csv"
    if change == "edit":
        copy.write_text("doc,pages\nforged,1\n")
    elif change == "delete":
        copy.unlink()
    else:
        with (batch / "manifest.yaml").open("a") as handle:
            handle.write("# edited afterwards\n")
    capsys.readouterr()

    for command in ("resume", "cancel"):
        code = main([command, str(batch), "--sandbox", sandbox.origin, "--quiet"])
        assert code == 2
        assert capsys.readouterr().err == (f"runner: {batch}: cannot continue this batch: {what}\n")


def test_a_csv_edited_between_validation_and_the_copy_stops_the_run_before_any_request(
    tmp_path: Path,
    sandbox: RunningSandbox,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import runner.batch.run

    manifest = write_inputs(tmp_path, in_flight=4)
    load = runner.batch.run.load_manifest

    def load_then_edit(*args: Any, **kwargs: Any) -> Any:
        loaded = load(*args, **kwargs)
        (tmp_path / "data" / "items.csv").write_text("doc,pages\nzulu,1\n")
        return loaded

    monkeypatch.setattr(runner.batch.run, "load_manifest", load_then_edit)
    monkeypatch.setenv("PULSE_API_KEY", "k")
    out = tmp_path / "results"

    code = main(["run", str(manifest), "--sandbox", sandbox.origin, "--out", str(out)])

    assert code == 2
    assert capsys.readouterr().err == (
        "runner: each file 'data/items.csv' changed while the batch was starting; "
        "nothing was sent: run it again\n"
    )
    assert list((out / "inp").iterdir()) == []  # no half-made batch left behind
    assert sandbox_books(sandbox, "pulse")["requests"] == {}


def test_verify_reports_an_edited_manifest_and_input_copy_and_exits_1(
    tmp_path: Path, sandbox: RunningSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_inputs(tmp_path, in_flight=4)
    out = tmp_path / "results"
    assert run_batch(manifest, out=out, sandbox=sandbox.origin, env=ENV, quiet=True) == 0
    batch = (out / "inp" / "latest").resolve()
    capsys.readouterr()
    assert main(["verify", str(batch)]) == 0
    assert capsys.readouterr().out == f"{batch}: OK (14 files)\n"

    with (batch / "manifest.yaml").open("a") as handle:
        handle.write("# edited afterwards\n")
    (batch / "inputs" / "items.csv").write_text("doc,pages\nforged,1\n")

    assert main(["verify", str(batch)]) == 1
    assert capsys.readouterr().out == (
        f"{batch}: 2 problems\n"
        "  inputs/items.csv: changed (sha256 differs)\n"
        "  manifest.yaml: changed (sha256 differs)\n"
    )
