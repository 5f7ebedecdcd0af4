"""Lobstr.io end to end: the engine and the adapter against the sandbox over real sockets."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx
import pytest

from runner.lifecycle import State
from runner.plan import Limits, Rate
from runner.providers import lobstr
from runner.sandbox.server import RunningSandbox
from tests.e2e.engine_harness import run_jobs, spec
from tests.e2e.helpers import sandbox_books

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

# Faster squid/task/run calls than the published limits (a test must take seconds), but
# the /results class keeps its documented 2 requests/second.
LIMITS = Limits(
    endpoints={
        "submit": Rate(50, 1.0, burst=5),
        "status": Rate(50, 1.0, burst=5),
        "results": Rate(2, 1.0),
        "download": Rate(10, 1.0),
    },
    in_flight=5,
)
SCENARIO = {
    "time_scale": 20,
    "providers": {"lobstr": {"duration": {"min": 1, "max": 2}, "results": {"min": 70, "max": 70}}},
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.sandbox(scenario=SCENARIO)
async def test_crawler_job_creates_a_squid_runs_it_and_pages_every_result(
    sandbox: RunningSandbox, tmp_path: Path
) -> None:
    tasks = [{"url": f"https://maps.example/{i}"} for i in range(3)]
    job = spec(
        "lobstr",
        "maps",
        "run",
        {"crawler": "maps", "params": {"lang": "en"}, "tasks": [*tasks, tasks[0]]},
        fetch={"export": True},
    )
    ran = await run_jobs(sandbox, lobstr.ADAPTER, [job], tmp_path, limits=LIMITS)
    assert ran.result.counts == {State.SUCCEEDED: 1}

    out = ran.job("maps")
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 210  # 3 distinct tasks x 70
    exported = list(csv.DictReader(io.StringIO((out / "files" / "export.csv").read_text())))
    assert len(exported) == 210
    outcome = json.loads((out / "job.json").read_text())
    assert {k: outcome[k] for k in ("done_reason", "done_reason_desc", "duplicated_count")} == {
        "done_reason": "tasks_done",
        "done_reason_desc": None,
        "duplicated_count": 1,
    }
    assert (outcome["state"], outcome["partial"]) == ("succeeded", False)

    seen = sandbox_books(sandbox, "lobstr")
    assert seen["requests"]["GET /v1/results"] == 3  # 100 + 100 + 10 rows
    assert seen["requests"]["POST /v1/squids"] == 1
    assert seen["requests"]["POST /v1/runs"] == 1
    assert seen["throttled"] == 0


@pytest.mark.sandbox(scenario=SCENARIO)
async def test_two_jobs_on_one_squid_take_turns(sandbox: RunningSandbox, tmp_path: Path) -> None:
    base = sandbox.base_urls["lobstr"]
    headers = {"authorization": "Token lobstr-e2e"}
    squid = httpx.post(f"{base}/squids", json={"crawler": "maps"}, headers=headers).json()["id"]
    httpx.post(f"{base}/squids/{squid}", json={"params": {"lang": "en"}}, headers=headers)
    jobs = [
        spec("lobstr", f"turn-{n}", "run", {"squid": squid, "tasks": [{"url": f"https://m/{n}"}]})
        for n in (1, 2)
    ]
    ran = await run_jobs(sandbox, lobstr.ADAPTER, jobs, tmp_path, limits=LIMITS)
    assert ran.result.counts == {State.SUCCEEDED: 2}
    seen = sandbox_books(sandbox, "lobstr")
    # Both started at once: the second got RunInProgress (our own run), waited, went again.
    assert seen["requests"]["POST /v1/runs"] >= 3
    assert seen["requests"]["GET /v1/runs"] >= 1  # whose run holds the squid: ours
