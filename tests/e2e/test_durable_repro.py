"""Reproducible results: the same manifest run twice against sandboxes with the same seed
(on the same port: out-of-band URLs name it) gives identical jobs/ trees, which hold no
remote id; batch.json, the journal and the log do."""

from __future__ import annotations

import filecmp
import json
import socket
from pathlib import Path

import pytest

from runner.batch.run import run_batch
from runner.sandbox.app import create_app
from runner.sandbox.scenario import Scenario
from runner.sandbox.server import serve_in_thread
from runner.store.journal import Journal
from tests.e2e.helpers import FAST_POLL

pytestmark = pytest.mark.e2e

SCENARIO = {
    "time_scale": 10,
    "defaults": {"duration": {"min": 0.5, "max": 2}},
    "providers": {"pulse": {"large_result_bytes": 300}, "spidra": {"partial_rate": 0.5}},
}
FAST_LIMITS = {"requests": {"rate": 50, "per": "1s"}}
ENV = {"SPIDRA_API_KEY": "spd_repro", "PULSE_API_KEY": "pulse_repro", "LOBSTR_API_KEY": "lb_r"}


def write_manifest(tmp: Path) -> Path:
    import yaml

    document = {
        "version": 1,
        "name": "repro",
        "defaults": {"timeout": "30s", "poll": FAST_POLL},
        "providers": {
            "spidra": {"api_key": "${SPIDRA_API_KEY}", "limits": FAST_LIMITS},
            "pulse": {"api_key": "${PULSE_API_KEY}", "limits": FAST_LIMITS},
            "lobstr": {
                "api_key": "${LOBSTR_API_KEY}",
                "limits": {"results": {"rate": 20, "per": "1s"}},
            },
        },
        "jobs": [
            {
                "id": "s-{n}",
                "provider": "spidra",
                "type": "scrape",
                "each": ["a", "b", "c"],
                "params": {"urls": [{"url": "https://{item}.example/"}], "prompt": "plans"},
            },
            {
                "id": "p-{n}",
                "provider": "pulse",
                "type": "extract",
                "each": ["x", "y"],
                "params": {"file_url": "https://files.example/{item}.pdf"},
            },
            {
                "id": "l-1",
                "provider": "lobstr",
                "type": "run",
                "params": {
                    "crawler": "maps",
                    "params": {"q": 1},
                    "tasks": [{"url": "https://m/1"}],
                },
            },
        ],
    }
    path = tmp / "repro.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_once(tmp: Path, manifest: Path, port: int, out: str) -> Path:
    app = create_app(seed=11, scenario=Scenario.from_dict(SCENARIO))
    with serve_in_thread(app, port=port) as sandbox:
        code = run_batch(manifest, out=tmp / out, sandbox=sandbox.origin, env=ENV, quiet=True)
    assert code == 0
    return (tmp / out / "repro" / "latest").resolve()


def differences(a: Path, b: Path) -> list[str]:
    compared = filecmp.dircmp(a, b)
    found = [f"{a / name}" for name in compared.left_only + compared.right_only]
    _, mismatch, errors = filecmp.cmpfiles(a, b, compared.common_files, shallow=False)
    found += [f"{a / name}" for name in mismatch + errors]
    for sub in compared.common_dirs:
        found += differences(a / sub, b / sub)
    return found


def test_two_runs_with_the_same_seed_leave_identical_jobs_trees(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path)
    port = free_port()
    first = run_once(tmp_path, manifest, port, "one")
    second = run_once(tmp_path, manifest, port, "two")
    assert differences(first / "jobs", second / "jobs") == []
    assert sorted(p.name for p in (first / "jobs").iterdir()) == [
        "l-1", "p-1", "p-2", "s-1", "s-2", "s-3",
    ]  # fmt: skip
    # ... and the batches differ where they should: their own timings
    assert (first / "batch.json").read_bytes() != (second / "batch.json").read_bytes()


def test_remote_ids_live_only_in_batch_json_the_journal_and_the_log(tmp_path: Path) -> None:
    batch = run_once(tmp_path, write_manifest(tmp_path), free_port(), "out")
    remote_ids = json.loads((batch / "batch.json").read_text())["remote_ids"]
    assert sorted(remote_ids) == ["l-1", "p-1", "p-2", "s-1", "s-2", "s-3"]
    log = (batch / "log.jsonl").read_text()
    with Journal.open(batch / "journal.sqlite", readonly=True) as journal:
        assert journal.remote_ids() == remote_ids
    scrubbed = 0
    for job_id, remote_id in remote_ids.items():
        assert f'"remote_id": "{remote_id}"' in log
        scrubbed += "<remote id>" in (batch / "jobs" / job_id / "status.json").read_text()
        for path in (batch / "jobs").rglob("*"):
            if path.is_file() and path.name != "results.jsonl":
                assert remote_id not in path.read_text(errors="replace"), path
    assert scrubbed >= 3  # Pulse and Lobstr payloads name the job; runner's copies do not
    # A result row is the provider's data, kept verbatim: Lobstr's rows name their run.
    rows = (batch / "jobs" / "l-1" / "results.jsonl").read_text().splitlines()
    assert all(json.loads(row)["run"] == remote_ids["l-1"] for row in rows)
