"""`expect:` end to end over real sockets: a job the sandbox completes with nothing in it, or
with items that do not match a schema, or with too many failed items, ends `failed` with
the reason; its files stay for inspection (and verify); `runner retry` sends it again."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from runner.batch.run import retry_batch
from runner.cli import main
from tests.conftest import MakeSandbox
from tests.e2e.helpers import manifest, run, sandbox_books

pytestmark = pytest.mark.e2e

PROVIDERS = {"bulkgrid": {"api_key": "${BULKGRID_API_KEY}"}}
ENV = {"BULKGRID_API_KEY": "bg_test_key"}
EMPTY_CRAWLS = {"providers": {"bulkgrid": {"jobs": {"crawl": {"results": {"min": 0, "max": 0}}}}}}
PARTIAL_CRAWLS = {
    "providers": {
        "bulkgrid": {"jobs": {"crawl": {"partial_rate": 1.0, "results": {"min": 6, "max": 6}}}}
    }
}
# A page that was crawled has a status code; a failed one has null (the sandbox's shape).
CRAWLED = {
    "type": "object",
    "required": ["url", "status_code"],
    "properties": {"status_code": {"type": "integer"}},
}


def crawl(job_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "provider": "bulkgrid",
        "type": "crawl",
        "params": {"urls": [f"https://{job_id}.example/"]},
        "fetch": {"content": []},
        **extra,
    }


def extract(job_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "provider": "bulkgrid",
        "type": "extract",
        "params": {
            "urls": [f"https://{job_id}.example/"],
            "query": "Every plan",
            "schema": {"type": "object"},
        },
        "fetch": {"content": []},
        **extra,
    }


def job_json(batch: Path, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((batch / "jobs" / job_id / "job.json").read_text())
    return data


def test_a_job_completed_with_no_results_fails_with_the_reason_and_retry_sends_it_again(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    empty = make_sandbox(scenario=EMPTY_CRAWLS)
    path = manifest(
        tmp_path,
        [crawl("empty", expect={"min_items": 1}), extract("full")],
        providers=PROVIDERS,
    )
    # In defaults: every job expects a result; the crawl's own expect adds nothing else.
    document = path.read_text().replace("defaults:\n", "defaults:\n  expect: {min_items: 1}\n")
    path.write_text(document)

    first = run(tmp_path, path, empty, env=ENV)

    assert first.code == 1
    assert first.states() == {"empty": "failed", "full": "succeeded"}
    failed = first.job("empty")
    assert failed["error"] == "completed with 0 results; expected at least 1"
    assert failed["provider_status"] == "completed"  # it finished remotely
    assert "empty failed: completed with 0 results; expected at least 1" in first.stderr
    assert main(["verify", str(first.batch)]) == 0
    assert json.loads((first.batch / "batch.json").read_text())["counts"] == {
        "failed": 1,
        "succeeded": 1,
    }

    full = make_sandbox()  # the same crawl, answered with results this time
    stderr = io.StringIO()
    code = retry_batch(first.batch, sandbox=full.origin, env=ENV, stderr=stderr)

    assert code == 0, stderr.getvalue()
    assert "retry: 1 job(s) to send again: empty (failed)" in stderr.getvalue()
    again = job_json(first.batch, "empty")
    assert again["state"] == "succeeded"
    assert again["counts"]["items"] >= 1
    assert (first.batch / "attempts" / "empty" / "1" / "job.json").is_file()
    assert len(sandbox_books(full, "bulkgrid")["submits"]) == 1  # only the failed one


def test_items_that_do_not_match_the_schema_fail_the_job_and_their_files_are_kept(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    sandbox = make_sandbox(scenario=PARTIAL_CRAWLS)
    (tmp_path / "crawled.schema.json").write_text(json.dumps(CRAWLED))
    path = manifest(
        tmp_path,
        [
            # every item checked against a schema file next to the manifest
            crawl("strict", expect={"schema": "crawled.schema.json", "max_failed_share": 1}),
            # inline schema every item meets; failed items allowed up to 50 %
            crawl(
                "lenient",
                expect={"schema": {"required": ["url"]}, "max_failed_share": 0.5},
            ),
            crawl("no-failures", expect={"min_items": 1}),  # max_failed_share 0 by default
        ],
        providers=PROVIDERS,
    )

    outcome = run(tmp_path, path, sandbox, env=ENV)

    assert outcome.code == 1
    assert outcome.states() == {
        "lenient": "succeeded",
        "no-failures": "failed",
        "strict": "failed",
    }
    strict = outcome.job("strict")
    assert strict["error"] == (
        "2 of 6 result items do not match expect.schema (crawled.schema.json); first: "
        "results.jsonl item 3: None is not of type 'integer' at status_code"
    )
    lines = (outcome.batch / "jobs" / "strict" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 6  # kept for inspection
    assert strict["files"] == []
    assert strict["counts"]["items"] == 6
    assert outcome.job("no-failures")["error"] == (
        "completed with 2 of 6 items failed (33%); expected at most 0% failed "
        "(expect.max_failed_share)"
    )
    # The schema file is one of the batch's inputs: resume and retry read the copy.
    info = json.loads((outcome.batch / "batch.json").read_text())
    assert "crawled.schema.json" in info["inputs"]
    assert main(["verify", str(outcome.batch)]) == 0
    (tmp_path / "crawled.schema.json").unlink()
    stderr = io.StringIO()
    code = retry_batch(outcome.batch, only=["strict"], env=ENV, stderr=stderr)
    assert code == 1, stderr.getvalue()  # the same answers: it misses its schema again
    assert "retry: 1 job(s) to send again: strict (failed)" in stderr.getvalue()
    assert job_json(outcome.batch, "strict")["error"].startswith("2 of 6 result items")


def test_min_files_counts_the_files_downloaded(tmp_path: Path, make_sandbox: MakeSandbox) -> None:
    sandbox = make_sandbox()
    path = manifest(
        tmp_path,
        [
            extract("with-markdown", fetch={"content": ["markdown"]}, expect={"min_files": 1}),
            extract("without", expect={"min_files": 1}),
        ],
        providers=PROVIDERS,
    )

    outcome = run(tmp_path, path, sandbox, env=ENV)

    assert outcome.states() == {"with-markdown": "succeeded", "without": "failed"}
    assert outcome.job("without")["error"] == "completed with 0 files; expected at least 1"
