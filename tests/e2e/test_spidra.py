"""Spidra batch and crawl end to end: `runner run`'s path against the sandbox over real sockets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.sandbox.server import RunningSandbox
from tests.e2e.helpers import manifest, run, submits_once

pytestmark = pytest.mark.e2e

FAST_LIMITS = {"requests": {"rate": 100, "per": "1s"}, "in_flight": 10}
PROVIDERS = {"spidra": {"api_key": "${SPIDRA_API_KEY}", "limits": FAST_LIMITS}}
URLS = [f"https://blog.example/2026/0{n}" for n in range(1, 5)]
BATCH_SCENARIO = {
    "time_scale": 20,
    "providers": {
        "spidra": {
            "duration": {"min": 1, "max": 2},
            # Every third item of a batch fails (sandbox core.item_failed): item 3 of 4.
            "jobs": {"batch": {"partial_rate": 1.0}},
        }
    },
}


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.sandbox(scenario=BATCH_SCENARIO)
def test_batch_items_land_one_per_line_and_retry_failed_reruns_them_once(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    jobs = [
        {"id": "retried", "provider": "spidra", "type": "batch",
         "params": {"urls": URLS, "output": "markdown"}, "retry": "failed"},
        {"id": "as-is", "provider": "spidra", "type": "batch",
         "params": {"urls": URLS, "output": "json"}},
    ]  # fmt: skip
    outcome = run(tmp_path, manifest(tmp_path, jobs, providers=PROVIDERS), sandbox)
    assert outcome.code == 0, outcome.stderr
    assert outcome.states() == {"as-is": "succeeded", "retried": "succeeded"}
    submits_once(outcome.books, "spidra", 2)
    retries = {k: v for k, v in outcome.books["spidra"]["requests"].items() if "retry" in k}
    assert list(retries.values()) == [1]  # one POST …/retry, for the one job that asked

    retried = lines(outcome.batch / "jobs" / "retried" / "results.jsonl")
    assert [(line["url"], line["status"]) for line in retried] == [(u, "completed") for u in URLS]
    assert all(line["result"] and line["error"] is None for line in retried)
    job = outcome.job("retried")
    assert (job["partial"], job["retried_items"], job["failed_items"]) == (False, 1, 0)

    as_is = lines(outcome.batch / "jobs" / "as-is" / "results.jsonl")
    assert [line["status"] for line in as_is] == ["completed", "completed", "failed", "completed"]
    assert as_is[2]["result"] is None
    assert as_is[2]["error"] == f"Failed to scrape {URLS[2]} — net::ERR_NAME_NOT_RESOLVED"
    job = outcome.job("as-is")
    assert (job["partial"], job["failed_items"], job["notes"]) == (
        True,
        1,
        ["1 of 4 items failed"],
    )


CRAWL_SCENARIO = {
    "time_scale": 20,
    "providers": {
        "spidra": {
            "duration": {"min": 1, "max": 2},
            "jobs": {"crawl": {"results": {"min": 150, "max": 150}, "result_bytes": 300}},
        }
    },
}


@pytest.mark.sandbox(scenario=CRAWL_SCENARIO)
def test_a_truncated_crawl_is_paged_and_its_markdown_links_downloaded(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    jobs = [
        {"id": "docs", "provider": "spidra", "type": "crawl",
         "params": {"baseUrl": "https://docs.example", "maxPages": 200},
         "fetch": {"pages": True, "markdown": True}},
    ]  # fmt: skip
    outcome = run(tmp_path, manifest(tmp_path, jobs, providers=PROVIDERS), sandbox)
    assert outcome.code == 0, outcome.stderr
    assert outcome.states() == {"docs": "succeeded"}
    submits_once(outcome.books, "spidra", 1)
    requests = outcome.books["spidra"]["requests"]
    assert requests["GET /api/crawl/{jobId}/pages"] == 1  # offset 100, up to 1000: the rest
    out = outcome.batch / "jobs" / "docs"
    pages = lines(out / "results.jsonl")
    assert len(pages) == 150
    assert len({page["url"] for page in pages}) == 150
    assert isinstance(pages[120]["data"], dict)  # /pages sends JSON text: parsed
    names = sorted(p.name for p in (out / "files").iterdir())
    assert names == [f"page-{n:05d}.md" for n in range(1, 151)]
    assert pages[0]["files"] == {"markdown": "files/page-00001.md"}
    # The file is the signed link's content (links are reusable in the sandbox).
    assert (out / "files" / "page-00101.md").read_bytes() == httpx.get(
        pages[100]["markdown"]
    ).content
    assert outcome.books["spidra"]["downloads"] == 150  # one per page, none twice
    assert outcome.books["spidra"]["keyed_downloads"] == 0  # signed links get no key
    job = outcome.job("docs")
    assert (job["pages"], job["failed_pages"], job["counts"]) == (
        150, 0, {"files": 150, "items": 150},
    )  # fmt: skip
