"""Bulkgrid, Lobstr and Skop through `runner run`'s path (manifest → plan → engine → results)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.sandbox.server import RunningSandbox
from tests.e2e.helpers import manifest, run, submits_once

pytestmark = pytest.mark.e2e

SCENARIO = {
    "time_scale": 20,
    "defaults": {"duration": {"min": 1, "max": 2}, "results": {"min": 5, "max": 5}},
}
KEYS = {"BULKGRID_API_KEY": "bg_live_x", "LOBSTR_API_KEY": "lobstr-x", "SKOP_API_KEY": "sk-x"}


@pytest.mark.sandbox(scenario=SCENARIO)
def test_a_manifest_with_all_three_providers_succeeds(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    jobs = [
        {
            "id": "shop-crawl",
            "provider": "bulkgrid",
            "type": "crawl",
            "params": {"urls": ["https://shop.example/a"]},
            "fetch": {"content": ["markdown"]},
            "retry": "failed",
        },
        {
            "id": "maps",
            "provider": "lobstr",
            "type": "run",
            "params": {
                "crawler": "maps",
                "params": {"lang": "en"},
                "tasks": [{"url": "https://maps.example/1"}],
            },
            "fetch": {"export": True},
        },
        {
            "id": "reports",
            "provider": "skop",
            "type": "scrape",
            "params": {"website": "https://reports.example", "prompt": "Find the annual reports"},
        },
    ]
    # Declared limits well above the published ones: the test is about the flow, not pacing
    # (Skop's default 60/min would spend a second on each document download).
    fast = {"requests": {"rate": 50, "per": "1s"}}
    providers_block = {
        "bulkgrid": {"api_key": "${BULKGRID_API_KEY}", "limits": fast},
        "lobstr": {"api_key": "${LOBSTR_API_KEY}", "limits": fast},
        "skop": {"api_key": "${SKOP_API_KEY}", "limits": fast},
    }
    path = manifest(tmp_path, jobs, providers=providers_block)
    outcome = run(tmp_path, path, sandbox, env=KEYS)
    assert outcome.code == 0, outcome.stderr
    assert outcome.states() == {
        "maps": "succeeded",
        "reports": "succeeded",
        "shop-crawl": "succeeded",
    }
    for name in ("bulkgrid", "skop"):
        submits_once(outcome.books, name, 1)
    crawl = outcome.batch / "jobs" / "shop-crawl"
    assert len((crawl / "results.jsonl").read_text().splitlines()) == 5
    assert len(list((crawl / "files").glob("*.markdown.md"))) == 5
    assert (outcome.batch / "jobs" / "maps" / "files" / "export.csv").is_file()
    assert len(list((outcome.batch / "jobs" / "reports" / "files").glob("*.pdf"))) == 5
    assert outcome.job("maps")["done_reason"] == "tasks_done"
    for secret in KEYS.values():
        for file in outcome.batch.rglob("*"):
            if file.is_file():
                assert secret.encode() not in file.read_bytes(), file
