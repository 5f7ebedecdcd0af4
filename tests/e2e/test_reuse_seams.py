"""Where incremental runs meet the rest of issue 13, end to end over real sockets: a reused
result must meet the job's current `expect`; `--json` counts reused jobs and `resume` /
`retry` take `--json` and `--ping`; a reused job counts against no budget cap and is never
the canary; shard batches lend their results like any other batch, and prune treats them
as batches without removing the unmerged shards of the newest run."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.batch.merge import merge_batches
from runner.batch.reuse import Policy
from runner.batch.run import run_batch
from runner.batch.shard import Shard
from runner.cli import main
from runner.sandbox.server import RunningSandbox
from runner.store.journal import Journal
from runner.store.locate import batches_in, is_batch_name
from tests.conftest import MakeSandbox
from tests.e2e.helpers import lobstr_runs, manifest, pulse_jobs, sandbox_books
from tests.e2e.test_cron_outputs import Monitor, monitor
from tests.e2e.test_expect import EMPTY_CRAWLS, crawl, extract

__all__ = ["monitor"]  # the fixture

pytestmark = pytest.mark.e2e

BULKGRID = {"bulkgrid": {"api_key": "${BULKGRID_API_KEY}"}}
PULSE = {"pulse": {"api_key": "${PULSE_API_KEY}"}}
ENV = {
    "BULKGRID_API_KEY": "bg_test_key",
    "LOBSTR_API_KEY": "lobstr_test",
    "PULSE_API_KEY": "pulse_test",
}


def run_once(
    tmp: Path, path: Path, sandbox: RunningSandbox, **options: Any
) -> tuple[int, str, Path]:
    """Run `path` into tmp/results; (exit code, stderr, the batch this run made)."""
    root = tmp / "results"
    before = set(root.glob("*/2*"))
    stderr = io.StringIO()
    code = run_batch(path, out=root, sandbox=sandbox.origin, env=ENV, stderr=stderr, **options)
    made = set(root.glob("*/2*")) - before
    assert len(made) == 1, made
    return code, stderr.getvalue(), made.pop()


def job_json(batch: Path, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((batch / "jobs" / job_id / "job.json").read_text())
    return data


def rewrite(path: Path, change: Any) -> None:
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_a_result_is_reused_only_if_it_meets_the_jobs_current_expectation(
    tmp_path: Path, make_sandbox: MakeSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    # The crawl completes with nothing in it; the extract with results.
    sandbox = make_sandbox(scenario=EMPTY_CRAWLS)
    path = manifest(
        tmp_path,
        [crawl("c"), extract("x")],
        providers=BULKGRID,
    )
    code, _, first = run_once(tmp_path, path, sandbox)
    assert code == 0  # no expectation yet: an empty crawl succeeds
    fingerprints = {job: job_json(first, job)["fingerprint"] for job in ("c", "x")}

    # Now both expect a result: the crawl's old result misses it, the extract's meets it.
    rewrite(path, lambda d: d["defaults"].__setitem__("expect", {"min_items": 1}))
    capsys.readouterr()
    assert main(["plan", str(path), "--out", str(tmp_path / "results"), "--sandbox"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(
        line.split()[:2] == ["c", "send"] and "earlier result misses its expectation" in line
        for line in lines
    ), lines
    assert any(line.split()[:2] == ["x", "reuse"] for line in lines), lines

    code, stderr, second = run_once(tmp_path, path, sandbox)

    assert code == 1  # the crawl was sent again, and is still empty
    assert (
        f"runner: c: not reusing {first.name}: misses its expectation (completed with 0 "
        "results; expected at least 1); sending it" in stderr
    )
    assert job_json(second, "c")["state"] == "failed"
    assert "reused_from" not in job_json(second, "c")
    assert job_json(second, "x")["reused_from"] == {"batch": first.name, "job": "x"}
    # expect is not in the fingerprint: tightening it re-judges, it does not re-key.
    assert {job: job_json(second, job)["fingerprint"] for job in ("c", "x")} == fingerprints
    submits = sandbox_books(sandbox, "bulkgrid")["submits"]
    assert sorted(submits.values()) == [1, 2]  # the extract once, the crawl twice
    log = [json.loads(line) for line in (second / "log.jsonl").read_text().splitlines()]
    refused = [e for e in log if e["event"] == "job.reuse_refused"]
    assert [(e["job_id"], e["reason"].split(": ", 1)[1]) for e in refused] == [
        ("c", "misses its expectation (completed with 0 results; expected at least 1)")
    ]
    not_reused = {e["job_id"]: e["why"] for e in log if e["event"] == "job.not_reused"}
    assert not_reused == {"c": "earlier result misses its expectation"}


def test_json_counts_reused_jobs_and_resume_and_retry_take_json_and_ping(
    tmp_path: Path,
    make_sandbox: MakeSandbox,
    monitor: Monitor,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_API_KEY", "pulse_test")
    good = make_sandbox()
    path = manifest(tmp_path, [pulse_jobs(3)], providers=PULSE)
    out = str(tmp_path / "results")
    assert main(["run", str(path), "--sandbox", good.origin, "--out", out, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reused"] == 0
    rewrite(path, lambda d: d["jobs"][0]["each"].__setitem__(2, "doc-other"))

    assert main(["run", str(path), "--sandbox", good.origin, "--out", out, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"succeeded": 3}
    assert summary["reused"] == 2
    assert sum(summary["counts"].values()) == summary["jobs"] == 3

    # resume takes --json and --ping (a cron that resumes reports like one that runs).
    batch = summary["batch_dir"]
    code = main(["resume", batch, "--json", "--ping", monitor.url])
    resumed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert resumed["batch_dir"] == batch
    assert (resumed["counts"], resumed["reused"]) == ({"succeeded": 3}, 2)
    assert [p for _, p, _ in monitor.received] == ["/ping/0f1e2d3c/start", "/ping/0f1e2d3c"]
    assert json.loads(monitor.received[1][2]) == resumed
    args = json.loads((Path(batch) / "batch.json").read_text())["argv"]
    assert monitor.url not in " ".join(args)  # the ping URL is a credential

    # retry too: a batch whose jobs all failed, sent again to a sandbox that answers.
    failing = make_sandbox(scenario={"defaults": {"fail_rate": 1.0}})
    (tmp_path / "other").mkdir()
    other = manifest(
        tmp_path / "other",
        [pulse_jobs(2, "q")],
        providers=PULSE,
    )
    run = ["run", str(other), "--sandbox", failing.origin, "--out", out, "--json", "--force"]
    assert main(run) == 1
    failed = json.loads(capsys.readouterr().out)
    assert failed["counts"] == {"failed": 2}
    monitor.received.clear()
    retry = ["retry", failed["batch_dir"], "--sandbox", good.origin, "--json"]
    code = main([*retry, "--ping", monitor.url])
    retried = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (retried["counts"], retried["reused"], retried["exit_code"]) == ({"succeeded": 2}, 0, 0)
    assert [p for _, p, _ in monitor.received] == ["/ping/0f1e2d3c/start", "/ping/0f1e2d3c"]


def _rank(job_id: str) -> str:
    return hashlib.sha256(job_id.encode("utf-8")).hexdigest()


def test_reused_jobs_count_against_no_cap_and_are_never_the_canary(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    # Every Lobstr run collects 2 results and reports 2 credits (credit_used).
    sandbox = make_sandbox(scenario={"providers": {"lobstr": {"results": {"min": 2, "max": 2}}}})
    providers = {"lobstr": {"api_key": "${LOBSTR_API_KEY}", "limits": {"in_flight": 1}}}
    runs = lobstr_runs(["a", "b", "c", "d"])
    path = manifest(tmp_path, [runs], providers=providers)
    code, _, _ = run_once(tmp_path, path, sandbox)
    assert code == 0
    assert sandbox_books(sandbox, "lobstr")["requests"]["POST /v1/runs"] == 4

    # Change the two jobs the canary would never pick over the others: over the whole plan
    # it would pick a reused job; over what is sent, one of these two.
    ids = sorted(["run-1", "run-2", "run-3", "run-4"], key=_rank)
    changed = ids[2:]

    def change(document: dict[str, Any]) -> None:
        for job_id in changed:
            document["jobs"][0]["each"][int(job_id[-1]) - 1] += "-new"
        # 2 jobs may be submitted; 5 credits: the 2 sent cost 4, the 2 reused cost 4 more.
        document["budget"] = {"jobs": 2}
        document["providers"]["lobstr"]["budget"] = {"credits": 5}

    rewrite(path, change)

    code, stderr, second = run_once(tmp_path, path, sandbox, sample=1)  # no --allow-partial

    assert code == 0, stderr
    assert {j: job_json(second, j)["state"] for j in ids} == dict.fromkeys(ids, "succeeded")
    reused = {j for j in ids if "reused_from" in job_json(second, j)}
    assert reused == set(ids[:2])
    assert sandbox_books(sandbox, "lobstr")["requests"]["POST /v1/runs"] == 6  # exactly 2 more
    with Journal.open(second / "journal.sqlite", readonly=True) as journal:
        sample = json.loads(journal.meta()["sample"])["ids"]
    assert sample == [changed[0]]  # among the jobs sent, never a reused one
    assert "budget" not in stderr


def test_shard_batches_lend_results_and_prune_treats_them_as_batches(
    tmp_path: Path, make_sandbox: MakeSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = make_sandbox()
    path = manifest(tmp_path, [pulse_jobs(4)], providers=PULSE)
    jobs = ["p-1", "p-2", "p-3", "p-4"]
    code, _, unsharded = run_once(tmp_path, path, sandbox)
    assert code == 0
    # Two shards sent again (--force): newer results than the unsharded batch's.
    force = {"policy": Policy(force_all=True)}
    shard_batches = []
    for k in (1, 2):
        code, _, made = run_once(tmp_path, path, sandbox, shard=Shard(k, 2), **force)
        assert code == 0
        assert made.name.endswith(f"-s{k}of2")
        assert is_batch_name(made.name)
        shard_batches.append(made)
    books = sandbox_books(sandbox, "pulse")["requests"]

    code, stderr, again = run_once(tmp_path, path, sandbox)

    assert code == 0, stderr
    assert sandbox_books(sandbox, "pulse")["requests"] == books  # nothing sent
    sources = {j: job_json(again, j)["reused_from"]["batch"] for j in jobs}
    assert set(sources.values()) == {b.name for b in shard_batches}  # the newest results
    assert batches_in(again.parent)[0] == again

    # A newer sharded run, not merged: prune --keep 1 keeps both of its shards, and what
    # `again` reused; the unsharded first batch goes.
    newest = [run_once(tmp_path, path, sandbox, shard=Shard(k, 2), **force)[2] for k in (1, 2)]
    capsys.readouterr()
    assert main(["prune", str(again.parent), "--keep", "1"]) == 0
    text = capsys.readouterr().out
    assert not unsharded.exists()
    assert f"remove  {unsharded.name}" in text
    assert all(b.exists() for b in newest)
    assert f"keep    {newest[0].name}  shard 1/2 of the newest run, not merged yet" in text
    # Older shards are batches like any other: once nothing kept reuses them, they go.
    assert not again.exists()
    assert not any(old.exists() for old in shard_batches)

    # Merged, the shards' results live on in the merged batch, a source like any other.
    merged = merge_batches(newest, tmp_path / "results").path
    for shard_batch in newest:
        shutil.rmtree(shard_batch)
    code, stderr, last = run_once(tmp_path, path, sandbox)
    assert code == 0, stderr
    assert {job_json(last, j)["reused_from"]["batch"] for j in jobs} == {merged.name}
