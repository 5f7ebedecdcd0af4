"""Bulkgrid end to end: the engine and the adapter against the sandbox over real sockets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner.lifecycle import State
from runner.plan import Limits, Rate
from runner.providers import bulkgrid
from runner.sandbox.server import RunningSandbox
from tests.e2e.engine_harness import run_jobs, spec
from tests.e2e.helpers import sandbox_books

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

LIMITS = Limits(requests=Rate(200, 1.0, burst=20), in_flight=10)
KNOBS: dict[str, Any] = {"duration": {"min": 1, "max": 2}, "results": {"min": 30, "max": 30}}
SCENARIO = {"time_scale": 20, "providers": {"bulkgrid": KNOBS}}
PARTIAL = {"time_scale": 20, "providers": {"bulkgrid": {**KNOBS, "partial_rate": 1.0}}}
URLS = ["https://shop.example/a", "https://shop.example/b"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.sandbox(scenario=SCENARIO)
async def test_crawl_pages_results_and_saves_content_and_screenshots(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    jobs = [
        spec(
            "bulkgrid",
            "crawl",
            "crawl",
            {"urls": URLS, "options": {"screenshot": "screenshot"}},
            fetch={"content": ["markdown", "links"], "screenshots": True},
        ),
        spec("bulkgrid", "map", "map", {"url": "https://shop.example/"}),
    ]
    ran = await run_jobs(sandbox, bulkgrid.ADAPTER, jobs, tmp_path, limits=LIMITS)
    assert ran.result.counts == {State.SUCCEEDED: 2}

    crawl = ran.job("crawl")
    items = [json.loads(x) for x in (crawl / "results.jsonl").read_text().splitlines()]
    assert len(items) == 30
    names = sorted(p.name for p in (crawl / "files").iterdir())
    expected = sorted(
        f"{item['id']}.{suffix}"
        for item in items
        for suffix in ("markdown.md", "links.txt", "screenshot.png")
    )
    assert names == expected
    # Each format's own content (the `type` query reached the API): links are URLs.
    for item in items:
        links = (crawl / "files" / f"{item['id']}.links.txt").read_text().splitlines()
        assert links
        assert all(link.startswith("https://") for link in links)
        assert (crawl / "files" / f"{item['id']}.markdown.md").read_text() != "\n".join(links)
    outcome = json.loads((crawl / "job.json").read_text())
    assert (outcome["counts"], outcome["partial"]) == ({"files": 90, "items": 30}, False)
    mapped = [json.loads(x) for x in (ran.job("map") / "results.jsonl").read_text().splitlines()]
    assert mapped
    assert all(isinstance(link, str) and link.startswith("http") for link in mapped)

    seen = sandbox_books(sandbox, "bulkgrid")
    assert seen["requests"]["GET /api/v1/runs/{runId}/results"] == 1  # 30 rows: one page
    assert seen["requests"]["GET /api/v1/runs/{runId}/results/{resultId}/content"] == 60
    assert sorted(seen["submits"].values()) == [1, 1]  # never submitted twice
    assert seen["downloads"] == 30  # every signed screenshot URL, fetched once
    assert seen["keyed_downloads"] == 0  # and none of them saw the key


@pytest.mark.sandbox(scenario=PARTIAL)
async def test_retry_failed_reruns_the_failed_urls_once(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    jobs = [
        spec("bulkgrid", "again", "crawl", {"urls": URLS}, fetch={"content": []}, retry="failed"),
        spec("bulkgrid", "once", "crawl", {"urls": URLS[:1]}, fetch={"content": []}),
    ]
    ran = await run_jobs(sandbox, bulkgrid.ADAPTER, jobs, tmp_path, limits=LIMITS)
    assert ran.result.counts == {State.SUCCEEDED: 2}
    seen = sandbox_books(sandbox, "bulkgrid")
    assert seen["requests"]["POST /api/v1/runs/{runId}/retry"] == 1
    # "again": one scan for the failed URLs, the first run's good results, the retry run's;
    # "once": its one page. The retry run fails partly too (partial_rate 1): still partial.
    assert seen["requests"]["GET /api/v1/runs/{runId}/results"] == 4
    again = json.loads((ran.job("again") / "job.json").read_text())
    assert again["notes"] == [
        f"{again['failed_results']} of {again['counts']['items']} results failed"
    ]
    once = json.loads((ran.job("once") / "job.json").read_text())
    assert once["partial"] is True
    assert once["notes"][0].endswith("results failed")
