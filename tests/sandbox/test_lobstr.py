"""Lobstr.io contract: squid → tasks → run, lowercase statuses, results, CSV export
(docs/providers/lobstr.md)."""

from __future__ import annotations

import csv
import io

import httpx
import pytest

from tests.conftest import MakeSandbox
from tests.sandbox.conftest import InProcess, MakeInProcess

pytestmark = pytest.mark.anyio

SCENARIO = {
    "providers": {"lobstr": {"duration": {"min": 1, "max": 1}, "results": {"min": 3, "max": 3}}}
}


async def _ready_squid(sb: InProcess, tasks: int = 2) -> str:
    squid = (await sb.request("lobstr", "POST", "/squids", json={"crawler": "maps"})).json()
    assert len(squid["id"]) == 32
    await sb.request("lobstr", "POST", f"/squids/{squid['id']}", json={"params": {"lang": "en"}})
    urls = [{"url": f"https://maps.example/{i}"} for i in range(tasks)]
    added = await sb.request("lobstr", "POST", "/tasks", json={"squid": squid["id"], "tasks": urls})
    assert added.json()["duplicated_count"] == 0
    return str(squid["id"])


async def test_run_lifecycle_lowercase_statuses(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario=SCENARIO)
    squid = await _ready_squid(sb)
    run = (await sb.request("lobstr", "POST", "/runs", json={"squid": squid})).json()
    assert (run["object"], run["status"], run["is_done"], len(run["id"])) == (
        "run",
        "pending",
        False,
        32,
    )
    seen = []
    for _ in range(12):
        body = (await sb.request("lobstr", "GET", f"/runs/{run['id']}")).json()
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        sb.clock.advance(0.1)
    assert seen == ["pending", "running", "uploading", "done"]
    assert (body["done_reason"], body["export_done"], body["total_results"]) == (
        "tasks_done",
        True,
        6,
    )
    stats = (await sb.request("lobstr", "GET", f"/runs/{run['id']}/stats")).json()
    assert (stats["is_done"], stats["percent_done"], stats["total_tasks"]) == (True, "100%", 2)


async def test_one_active_run_per_squid_and_not_ready(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario=SCENARIO)
    bare = (await sb.request("lobstr", "POST", "/squids", json={"crawler": "maps"})).json()
    not_ready = await sb.request("lobstr", "POST", "/runs", json={"squid": bare["id"]})
    assert not_ready.status_code == 400
    assert not_ready.json()["type"] == "SquidNotReady"
    squid = await _ready_squid(sb)
    assert (await sb.request("lobstr", "POST", "/runs", json={"squid": squid})).status_code == 200
    second = await sb.request("lobstr", "POST", "/runs", json={"squid": squid})
    assert second.status_code == 400
    assert second.json() == {
        "error": "A run is already active for this squid",
        "type": "RunInProgress",
        "code": 400,
    }


async def test_results_paging_with_page_size_and_limit(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario=SCENARIO)
    squid = await _ready_squid(sb)
    run_id = (await sb.request("lobstr", "POST", "/runs", json={"squid": squid})).json()["id"]
    sb.clock.advance(2)
    page = (
        await sb.request("lobstr", "GET", "/results", params={"run": run_id, "page_size": 4})
    ).json()
    assert (page["total_results"], page["total_pages"], len(page["data"])) == (6, 2, 4)
    assert page["next"].endswith("page=2")
    assert page["previous"] is None
    last = (
        await sb.request("lobstr", "GET", "/results", params={"run": run_id, "limit": 4, "page": 2})
    ).json()
    assert len(last["data"]) == 2
    assert last["next"] is None
    both = await sb.request("lobstr", "GET", "/results", params={"run": run_id, "squid": squid})
    assert both.status_code == 400


async def test_abort_uploads_then_aborted_and_auth(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario=SCENARIO)
    squid = await _ready_squid(sb)
    run_id = (await sb.request("lobstr", "POST", "/runs", json={"squid": squid})).json()["id"]
    sb.clock.advance(0.5)
    aborted = (await sb.request("lobstr", "POST", f"/runs/{run_id}/abort")).json()
    assert (aborted["status"], aborted["is_done"], aborted["done_reason"]) == (
        "uploading",
        True,
        "aborted",
    )
    sb.clock.advance(1)
    final = (await sb.request("lobstr", "GET", f"/runs/{run_id}")).json()
    assert (final["status"], final["export_done"]) == ("aborted", True)
    again = await sb.request("lobstr", "POST", f"/runs/{run_id}/abort")
    assert again.status_code == 404
    denied = await sb.request(
        "lobstr", "GET", f"/runs/{run_id}", auth=False, headers={"authorization": "Bearer x"}
    )
    assert (denied.status_code, denied.json()["type"]) == (401, "NotAuthenticated")


async def test_paused_run_with_done_reason(make_inprocess: MakeInProcess) -> None:
    scenario = {"providers": {"lobstr": {**SCENARIO["providers"]["lobstr"], "partial_rate": 1.0}}}
    sb = make_inprocess(scenario=scenario)
    squid = await _ready_squid(sb)
    run_id = (await sb.request("lobstr", "POST", "/runs", json={"squid": squid})).json()["id"]
    statuses = set()
    for _ in range(40):
        body = (await sb.request("lobstr", "GET", f"/runs/{run_id}")).json()
        statuses.add((body["status"], body["done_reason"]))
        sb.clock.advance(0.05)
    assert ("paused", "no_account_available") in statuses
    assert ("done", "limit_exceeded") in statuses


async def test_endpoint_limits(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario={"providers": {"lobstr": {"endpoint_limits": True}}})
    codes = [
        (await sb.request("lobstr", "GET", "/results", params={"run": "x"})).status_code
        for _ in range(3)
    ]
    assert codes == [404, 404, 429]
    books = (await sb.stats())["providers"]["lobstr"]
    assert books["endpoints"]["results"] == {
        "limit": {"requests": 2, "per_seconds": 1.0},
        "max_window_requests": 3,
        "throttled": 1,
    }
    sb.clock.advance(1)
    limited = await sb.request("lobstr", "GET", "/results", params={"run": "x"})
    assert limited.status_code == 404
    sb.clock.advance(0.1)
    limited = await sb.request("lobstr", "GET", "/results", params={"run": "x"})
    assert limited.status_code == 404  # (t-1s, t] holds one request
    limited = await sb.request("lobstr", "GET", "/results", params={"run": "x"})
    assert limited.status_code == 429
    assert limited.json()["type"] == "RateLimitExceeded"
    assert {
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    } <= set(limited.headers)


def test_csv_export_download_without_auth(make_sandbox: MakeSandbox) -> None:
    sb = make_sandbox(scenario={"time_scale": 1000, "providers": SCENARIO["providers"]})
    base, headers = sb.base_urls["lobstr"], {"authorization": "Token t"}
    squid = httpx.post(f"{base}/squids", json={"crawler": "maps"}, headers=headers).json()["id"]
    httpx.post(f"{base}/squids/{squid}", json={"params": {}}, headers=headers)
    httpx.post(
        f"{base}/tasks",
        json={"squid": squid, "tasks": [{"url": "https://a.example"}]},
        headers=headers,
    )
    run_id = httpx.post(f"{base}/runs", json={"squid": squid}, headers=headers).json()["id"]
    for _ in range(200):
        if httpx.get(f"{base}/runs/{run_id}", headers=headers).json()["export_done"]:
            break
    s3 = httpx.get(f"{base}/runs/{run_id}/download", headers=headers).json()["s3"]
    export = httpx.get(s3)  # the SDK's bare httpx.stream: no auth
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 3
    assert rows[0]["run"] == run_id
