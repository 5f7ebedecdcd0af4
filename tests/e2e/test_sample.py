"""`runner run --sample N` end to end over real sockets: N jobs of each (provider, type) run
first; the rest are sent only if all of them succeed and meet their expectations; a failed
canary skips the rest ("canary failed: ..."), exit 1, and `runner retry` re-runs the failed
sample jobs and then releases the rest (the sandbox's books count every submit)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from runner.batch.run import resume_batch, retry_batch, run_batch
from runner.batch.sample import choose
from runner.cli import main
from runner.manifest.loader import load_manifest
from runner.sandbox.server import RunningSandbox
from runner.store.journal import Journal
from tests.conftest import MakeSandbox
from tests.e2e.helpers import manifest, pulse_jobs, sandbox_books

pytestmark = pytest.mark.e2e

ENV = {"BULKGRID_API_KEY": "bg_test_key", "PULSE_API_KEY": "pulse_test"}
PROVIDERS = {
    "bulkgrid": {"api_key": "${BULKGRID_API_KEY}"},
    "pulse": {"api_key": "${PULSE_API_KEY}"},
}
EMPTY_CRAWLS = {"providers": {"bulkgrid": {"jobs": {"crawl": {"results": {"min": 0, "max": 0}}}}}}


def crawls(n: int) -> dict[str, Any]:
    return {
        "id": "crawl-{n}",
        "provider": "bulkgrid",
        "type": "crawl",
        "each": [f"site{i}" for i in range(n)],
        "params": {"urls": ["https://{item}.example/"]},
        "fetch": {"content": []},
        "expect": {"min_items": 1},
    }


def run(tmp: Path, path: Path, sandbox: RunningSandbox, sample: int) -> tuple[int, str, Path]:
    stderr = io.StringIO()
    code = run_batch(
        path, out=tmp / "results", sandbox=sandbox.origin, env=ENV, stderr=stderr, sample=sample
    )
    batches = [p for p in (tmp / "results").glob("*/*") if p.name != "latest"]
    return code, stderr.getvalue(), batches[0]


def states(batch: Path) -> dict[str, str]:
    return {
        path.name: json.loads((path / "job.json").read_text())["state"]
        for path in sorted((batch / "jobs").iterdir())
    }


def submitted_order(batch: Path) -> list[str]:
    log = [json.loads(line) for line in (batch / "log.jsonl").read_text().splitlines()]
    return [entry["job_id"] for entry in log if entry["event"] == "job.submitting"]


def test_a_failed_canary_skips_the_rest_and_retry_releases_them_once_it_succeeds(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    empty = make_sandbox(scenario=EMPTY_CRAWLS)
    path = manifest(tmp_path, [crawls(4), pulse_jobs(3)], providers=PROVIDERS)
    plan = load_manifest(path, env=ENV).plan
    sample = choose(plan, 1)
    canary_crawl = next(i for i in sample if i.startswith("crawl"))
    canary_pulse = next(i for i in sample if i.startswith("p-"))

    code, stderr, batch = run(tmp_path, path, empty, sample=1)

    assert code == 1
    reason = f"canary failed: {canary_crawl} failed"
    ended = states(batch)
    assert ended[canary_crawl] == "failed"
    assert ended[canary_pulse] == "succeeded"
    held = sorted(set(ended) - {canary_crawl, canary_pulse})
    assert len(held) == 5
    for job_id in held:
        job = json.loads((batch / "jobs" / job_id / "job.json").read_text())
        assert (job["state"], job["error"]) == ("skipped", reason)
    # Only the sample reached the providers.
    assert len(sandbox_books(empty, "bulkgrid")["submits"]) == 1
    assert len(sandbox_books(empty, "pulse")["submits"]) == 1
    assert (
        f"runner: canary failed: {canary_crawl} (bulkgrid crawl) failed: completed with 0 "
        "results; expected at least 1\n" in stderr
    )
    assert (
        f"runner: canary: 5 other job(s) not submitted (skipped); fix the cause, then "
        f"runner retry {batch} re-runs the failed sample jobs and, if they all succeed, "
        "the rest\n" in stderr
    )
    assert main(["verify", str(batch)]) == 0

    # Resume changes nothing: the canary still failed.
    assert resume_batch(batch, env=ENV, stderr=io.StringIO()) == 1
    assert states(batch) == ended
    assert len(sandbox_books(empty, "bulkgrid")["submits"]) == 1

    full = make_sandbox()  # crawls with results: the cause is fixed
    out = io.StringIO()
    code = retry_batch(batch, sandbox=full.origin, env=ENV, stderr=out)

    assert code == 0, out.getvalue()
    assert set(states(batch).values()) == {"succeeded"}
    # The failed canary first, then the five held back; the succeeded one never again.
    assert len(sandbox_books(full, "bulkgrid")["submits"]) == 4
    assert len(sandbox_books(full, "pulse")["submits"]) == 2
    order = submitted_order(batch)
    assert order[:3] == [canary_crawl, canary_pulse, canary_crawl]
    assert sorted(order[3:]) == held
    with Journal.open(batch / "journal.sqlite", readonly=True) as journal:
        released = sorted(e.job_id for e in journal.events() if e.event == "release")
    assert released == held
    assert main(["verify", str(batch)]) == 0


def test_a_passing_canary_goes_on_to_the_rest(tmp_path: Path, make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox()
    path = manifest(tmp_path, [pulse_jobs(6)], providers=PROVIDERS)
    plan = load_manifest(path, env=ENV).plan
    sample = choose(plan, 2)

    code, stderr, batch = run(tmp_path, path, sandbox, sample=2)

    assert code == 0, stderr
    assert set(states(batch).values()) == {"succeeded"}
    order = submitted_order(batch)
    assert sorted(order[:2]) == sorted(sample)  # the sample went first, alone
    assert len(order) == 6
    assert "runner: canary" not in stderr
    assert len(sandbox_books(sandbox, "pulse")["submits"]) == 6


def test_the_sample_is_the_same_every_time_and_per_provider_and_type(tmp_path: Path) -> None:
    path = manifest(tmp_path, [crawls(5), pulse_jobs(5)], providers=PROVIDERS)
    plan = load_manifest(path, env=ENV).plan

    first = choose(plan, 2)

    assert first == choose(load_manifest(path, env=ENV).plan, 2)
    assert sum(i.startswith("crawl-") for i in first) == 2
    assert sum(i.startswith("p-") for i in first) == 2
    assert choose(plan, 10) == [spec.id for spec in plan.jobs]  # N past a group: all of it
