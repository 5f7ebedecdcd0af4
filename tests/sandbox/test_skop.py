"""Skop contract: POST /scrape/ (201, job_ ids), status with `extracting`, results, documents."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import MakeSandbox
from tests.sandbox.conftest import MakeInProcess

pytestmark = pytest.mark.anyio

JOB = {"website": "https://corp.example", "prompt": "Find every annual report PDF"}
SCENARIO = {
    "providers": {"skop": {"duration": {"min": 1, "max": 1}, "results": {"min": 3, "max": 3}}}
}


async def test_lifecycle_with_undocumented_subphase(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario=SCENARIO)
    created = await sb.request("skop", "POST", "/scrape/", json=JOB)
    assert created.status_code == 201
    job_id = created.json()["job_id"]
    assert re.fullmatch(r"job_[a-z0-9]+", job_id)
    seen = []
    for _ in range(12):
        body = (await sb.request("skop", "GET", f"/scrape/status/{job_id}")).json()
        if not seen or seen[-1][0] != body["status"]:
            seen.append((body["status"], body["is_active"]))
        sb.clock.advance(0.1)
    assert seen == [
        ("pending", True),
        ("in_progress", True),
        ("extracting", True),
        ("completed", False),
    ]
    results = (await sb.request("skop", "GET", f"/scrape/results/{job_id}")).json()
    assert (results["status"], results["total_documents_found"], results["success_rate"]) == (
        "completed",
        3,
        1.0,
    )
    assert results["metadata"]["original_prompt"] == JOB["prompt"]


async def test_errors(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario={"providers": {"skop": {"max_active": 1}}})
    short = await sb.request("skop", "POST", "/scrape/", json={**JOB, "prompt": "pdfs"})
    assert short.status_code == 400
    assert short.json()["error"] == "validation_error"
    assert short.json()["message"] == "prompt: must be between 10 and 500 characters"
    assert (await sb.request("skop", "POST", "/scrape", json=JOB)).status_code == 201
    busy = await sb.request("skop", "POST", "/scrape/", json=JOB)
    assert (busy.status_code, busy.json()["error"]) == (429, "concurrency_limit_exceeded")
    missing = await sb.request("skop", "GET", "/scrape/results/job_zzz")
    assert missing.json() == {"error": "not_found", "message": "Job not found or access denied"}
    denied = await sb.request("skop", "GET", "/scrape/status/job_zzz", auth=False)
    assert denied.status_code == 401


def test_documents_served_by_sandbox(make_sandbox: MakeSandbox) -> None:
    sb = make_sandbox(
        scenario={
            "time_scale": 1000,
            "providers": {"skop": {"partial_rate": 1.0, "results": {"min": 3, "max": 3}}},
        }
    )
    headers = {"authorization": "Bearer sk-1"}
    job_id = httpx.post(sb.base_urls["skop"] + "/scrape/", json=JOB, headers=headers).json()[
        "job_id"
    ]
    for _ in range(200):
        status = httpx.get(f"{sb.base_urls['skop']}/scrape/status/{job_id}", headers=headers).json()
        if not status["is_active"]:
            break
    results = httpx.get(f"{sb.base_urls['skop']}/scrape/results/{job_id}", headers=headers).json()
    assert (results["total_documents_found"], results["total_documents_downloaded"]) == (3, 2)
    assert results["has_errors"] is True
    doc = httpx.get(results["documents"][0]["url"])
    assert doc.headers["content-type"] == "application/pdf"
    assert doc.content.startswith(b"%PDF-")
