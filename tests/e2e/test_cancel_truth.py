"""Cancel tells the truth, over real sockets: a job is `cancelled` only when its provider's
cancel request reached the sandbox (its books prove it); a job whose provider has no cancel
(Spidra scrape, Skop) is never called cancelled and no cancel request is ever sent for it.
`runner cancel`, `on_interrupt: cancel` and `on_timeout: cancel`, every provider."""

from __future__ import annotations

import io
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
from runner.sandbox.app import create_app
from runner.sandbox.scenario import Scenario
from runner.sandbox.server import RunningSandbox, serve_in_thread
from runner.store.journal import Journal
from tests.e2e.helpers import sandbox_books

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
NO_CANCEL = "provider has no cancel: the remote job runs on"
POLL = {"initial": "50ms", "max": "100ms", "multiplier": 1.5}
FAST = {"rate": 50, "per": "1s"}  # over the published limits: no test waits for a budget
LIMITS = {"requests": FAST, "submit": FAST, "status": FAST}

# One job of every kind of cancel: (job id, provider, type, params).
JOBS: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "bg-extract",
        "bulkgrid",
        "extract",
        {"urls": ["https://shop.example/"], "query": "Plans", "schema": {"type": "object"}},
    ),
    (
        "lb-run",
        "lobstr",
        "run",
        {
            "crawler": "google-maps-search-export",
            "params": {"language": "fr"},
            "tasks": [{"url": "https://www.google.com/maps/search/cafes+lyon"}],
        },
    ),
    (
        "sp-scrape",
        "spidra",
        "scrape",
        {"urls": [{"url": "https://acme.example/pricing"}], "prompt": "Plans", "output": "json"},
    ),
    ("sp-batch", "spidra", "batch", {"urls": ["https://blog.example/1"]}),
    ("sp-crawl", "spidra", "crawl", {"baseUrl": "https://help.example/", "maxPages": 5}),
    (
        "sk-scrape",
        "skop",
        "scrape",
        {"website": "https://investors.example/", "prompt": "Annual reports as PDF"},
    ),
    ("pu-extract", "pulse", "extract", {"file_url": "https://files.example/a.pdf"}),
]
# The one request each cancellable job's cancel must leave in the books, and how it polls.
CANCEL_REQUEST = {
    "bg-extract": ("bulkgrid", "POST /api/v1/runs/{runId}/cancel"),
    "lb-run": ("lobstr", "POST /v1/runs/{run}/abort"),
    "sp-batch": ("spidra", "DELETE /api/batch/scrape/{batchId}"),
    "sp-crawl": ("spidra", "DELETE /api/crawl/{jobId}"),
    "pu-extract": ("pulse", "DELETE /job/{job_id}"),
}
NOT_CANCELLABLE = {"sp-scrape", "sk-scrape"}
# Every request besides polls (GET) that submitting these jobs takes.
SUBMITS = {
    "bulkgrid": {"POST /api/v1/extract"},
    "lobstr": {"POST /v1/squids", "POST /v1/squids/{squid}", "POST /v1/tasks", "POST /v1/runs"},
    "spidra": {"POST /api/scrape", "POST /api/batch/scrape", "POST /api/crawl"},
    "skop": {"POST /scrape/"},
    "pulse": {"POST /extract"},
}
KEYS = {
    "BULKGRID_API_KEY": "bg_cancel_key",
    "LOBSTR_API_KEY": "lobstr_cancel_key",
    "SPIDRA_API_KEY": "spd_cancel_key",
    "SKOP_API_KEY": "skop_cancel_key",
    "PULSE_API_KEY": "pulse_cancel_key",
}


def write_manifest(tmp: Path, *, timeout: str = "60s", **policy: str) -> Path:
    providers = {
        name: {"api_key": f"${{{name.upper()}_API_KEY}}", "limits": LIMITS, **policy}
        for name in ("bulkgrid", "lobstr", "spidra", "skop", "pulse")
    }
    document = {
        "version": 1,
        "name": "truth",
        "defaults": {"timeout": timeout, "poll": POLL},
        "providers": providers,
        "jobs": [
            {"id": job_id, "provider": provider, "type": kind, "params": params}
            for job_id, provider, kind, params in JOBS
        ],
    }
    path = tmp / "truth.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@pytest.fixture
def endless() -> Iterator[RunningSandbox]:
    """Every remote job takes an hour: still running whatever the runner does."""
    scenario = Scenario.from_dict({"defaults": {"duration": {"min": 3600, "max": 3600}}})
    with serve_in_thread(create_app(seed=5, scenario=scenario)) as running:
        yield running


def job_json(batch: Path, job_id: str) -> dict[str, Any]:
    return json.loads((batch / "jobs" / job_id / "job.json").read_text())  # type: ignore[no-any-return]


def batch_dir(out: Path) -> Path:
    return next(p for p in (out / "truth").iterdir() if p.name != "latest")


def journal_states(batch: Path) -> dict[str, str]:
    with Journal.open(batch / "journal.sqlite", readonly=True) as journal:
        return {row.job_id: row.state.value for row in journal.rows()}


def run_until_all_submitted_then_sigterm(manifest: Path, sandbox: RunningSandbox, out: Path) -> str:
    """`runner run` in a real process, stopped with SIGTERM once all jobs run remotely."""
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(manifest), "--sandbox", sandbox.origin,
         "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, **KEYS},
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert process.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while sum("submitted to" in line for line in seen) < len(JOBS):
        line = process.stderr.readline()
        seen.append(line)
        if not line or " failed: " in line or time.monotonic() > deadline:
            process.kill()
            pytest.fail("".join(seen) + process.communicate()[1])
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=30)
    assert process.returncode == 143, "".join(seen) + rest
    return "".join(seen) + rest


def cancel_cli(batch: Path, sandbox: RunningSandbox) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", "cancel", str(batch), "--sandbox", sandbox.origin],
        cwd=ROOT,
        env={**os.environ, **KEYS},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_cancels_in_books(ledger: dict[str, Any], cancelled: set[str]) -> None:
    """Exactly one cancel request per job reported cancelled, and no other request that
    could cancel anything: beside polls, each provider saw its submits and those cancels
    only (so nothing was sent for a Spidra scrape, and Skop saw submits and polls only)."""
    for job_id, (provider, request) in CANCEL_REQUEST.items():
        expected = 1 if job_id in cancelled else 0
        assert ledger[provider]["requests"].get(request, 0) == expected, (job_id, ledger)
    for provider, submits in SUBMITS.items():
        sent = {r for r in ledger[provider]["requests"] if not r.startswith("GET ")}
        cancels = {r for j, (p, r) in CANCEL_REQUEST.items() if p == provider and j in cancelled}
        assert sent == submits | cancels, (provider, sent)
    assert set(ledger["skop"]["requests"]) <= {"POST /scrape/", "GET /scrape/status/{job_id}"}


def test_runner_cancel_cancels_what_can_be_and_detaches_the_rest(
    tmp_path: Path, endless: RunningSandbox
) -> None:
    out = tmp_path / "results"
    run_until_all_submitted_then_sigterm(write_manifest(tmp_path), endless, out)
    batch = batch_dir(out)
    assert set(journal_states(batch).values()) <= {"queued", "running"}  # detached by default

    done = cancel_cli(batch, endless)

    assert done.returncode == 0, done.stderr  # all it could cancel was cancelled
    states = {job_id: job_json(batch, job_id)["state"] for job_id, *_ in JOBS}
    assert states == {
        job_id: "detached" if job_id in NOT_CANCELLABLE else "cancelled" for job_id, *_ in JOBS
    }
    for job_id in NOT_CANCELLABLE:
        assert job_json(batch, job_id)["error"] == NO_CANCEL
        assert f"{job_id} detached: {NO_CANCEL}" in done.stderr
    assert job_json(batch, "pu-extract")["error"] == "cancelled remotely by runner cancel"
    assert json.loads((batch / "batch.json").read_text())["counts"] == {
        "cancelled": 5,
        "detached": 2,
    }
    assert journal_states(batch) == states
    status = json.loads(
        subprocess.run(
            [sys.executable, "-m", "runner", "status", str(batch), "--json"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert status["counts"] == {"cancelled": 5, "detached": 2}
    assert {job["id"]: job["error"] for job in status["jobs"] if job["state"] == "detached"} == (
        dict.fromkeys(NOT_CANCELLABLE, NO_CANCEL)
    )
    assert_cancels_in_books(sandbox_books(endless), set(CANCEL_REQUEST))


def test_on_interrupt_cancel_leaves_what_it_cannot_cancel_resumable(
    tmp_path: Path, endless: RunningSandbox
) -> None:
    out = tmp_path / "results"
    manifest = write_manifest(tmp_path, on_interrupt="cancel")
    stderr = run_until_all_submitted_then_sigterm(manifest, endless, out)
    batch = batch_dir(out)

    states = journal_states(batch)
    assert {job_id: states[job_id] for job_id in CANCEL_REQUEST} == dict.fromkeys(
        CANCEL_REQUEST, "cancelled"
    )
    assert {states[job_id] for job_id in NOT_CANCELLABLE} <= {"queued", "running"}  # resumable
    for provider, job_id in (("spidra", "sp-scrape"), ("skop", "sk-scrape")):
        line = f"runner: {provider}: {job_id} not cancelled on interrupt: {NO_CANCEL}"
        assert line in stderr.splitlines(), stderr
    logged = [json.loads(line) for line in (batch / "log.jsonl").read_text().splitlines()]
    kept = {tuple(e["job_ids"]) for e in logged if e["event"] == "provider.no_cancel"}
    assert kept == {("sp-scrape",), ("sk-scrape",)}
    assert_cancels_in_books(sandbox_books(endless), set(CANCEL_REQUEST))

    # What stayed resumable is detached by `runner cancel`, still without a cancel request.
    done = cancel_cli(batch, endless)
    assert done.returncode == 0, done.stderr
    assert {job_id: job_json(batch, job_id)["state"] for job_id in NOT_CANCELLABLE} == (
        dict.fromkeys(NOT_CANCELLABLE, "detached")
    )
    assert_cancels_in_books(sandbox_books(endless), set(CANCEL_REQUEST))


@pytest.mark.sandbox(scenario={"defaults": {"duration": {"min": 3600, "max": 3600}}})
def test_on_timeout_cancel_says_which_provider_could_not_cancel(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    manifest = write_manifest(tmp_path, timeout="300ms", on_timeout="cancel")
    stderr = io.StringIO()
    code = run_batch(
        manifest, out=tmp_path / "results", sandbox=sandbox.origin, env=KEYS, stderr=stderr
    )
    batch = batch_dir(tmp_path / "results")

    assert code == 1, stderr.getvalue()
    for job_id, *_ in JOBS:
        outcome = job_json(batch, job_id)
        assert outcome["state"] == "timed_out"
        what = NO_CANCEL if job_id in NOT_CANCELLABLE else "cancel requested remotely"
        # on a loaded machine the job's last poll may still be in flight at its timeout
        assert outcome["error"] in (
            f"timed out after 0.3s ({what})",
            f"timed out after 0.3s with a request still unanswered ({what})",
        ), job_id
    assert_cancels_in_books(sandbox_books(sandbox), set(CANCEL_REQUEST))
