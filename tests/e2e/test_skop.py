"""Skop end to end: the engine and the adapter against the sandbox over real sockets."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from runner.lifecycle import State
from runner.plan import Limits, Rate
from runner.providers import skop
from runner.sandbox.server import RunningSandbox
from runner.store.sanitize import safe_name
from tests.e2e.engine_harness import run_jobs, spec

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

LIMITS = Limits(requests=Rate(100, 1.0, burst=10), in_flight=3)
SCENARIO = {
    "time_scale": 20,
    "providers": {"skop": {"duration": {"min": 2, "max": 3}, "results": {"min": 8, "max": 8}}},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.sandbox(scenario=SCENARIO)
async def test_documents_are_downloaded_filtered_and_safely_named(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    params = {
        "website": "https://reports.example",
        "prompt": "Find every annual report PDF",
        "parameters": {"max_file_size_mb": 1},
    }
    job = spec("skop", "reports", "scrape", params, fetch={"min_confidence": 0.75})
    ran = await run_jobs(sandbox, skop.ADAPTER, [job], tmp_path, limits=LIMITS)
    assert ran.result.counts == {State.SUCCEEDED: 1}
    assert ran.result.notices == ()  # `extracting` is running (is_active), not unknown

    out = ran.job("reports")
    results = json.loads((out / "result.json").read_text())
    documents = results["documents"]
    assert len(documents) == 8
    kept = [d for d in documents if d["confidence_score"] >= 0.75]
    taken: set[str] = set()
    expected = sorted(safe_name(skop.document_name(d), taken) for d in kept)
    assert sorted(p.name for p in (out / "files").iterdir()) == expected
    books = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]["skop"]
    assert (books["downloads"], books["keyed_downloads"]) == (len(kept), 0)  # no key to hosts
    for document in kept:
        name = safe_name(skop.document_name(document), set())
        assert (out / "files" / name).read_bytes() == httpx.get(document["url"]).content
    outcome = json.loads((out / "job.json").read_text())
    low = len(documents) - len(kept)
    assert outcome["counts"] == {"files": len(kept), "items": 0}
    assert outcome["documents_skipped"] == {"low_confidence": low, "too_large": 0}
    assert outcome["partial"] is False
