"""Spidra contract: /api/scrape, /api/batch/scrape, /api/crawl as docs/providers/spidra.md says."""

from __future__ import annotations

import json

import httpx
import pytest

from runner.sandbox.determinism import body_key
from tests.conftest import MakeSandbox
from tests.sandbox.conftest import MakeInProcess

pytestmark = pytest.mark.anyio

SCRAPE = {
    "urls": [{"url": "https://acme.example/pricing"}],
    "prompt": "List plans",
    "output": "json",
}
FAST = {"providers": {"spidra": {"duration": {"min": 1, "max": 1}}}}


async def test_scrape_lifecycle_with_sdk_json_separators(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario=FAST)
    # The SDK sends json.dumps() output: ", " and ": " separators (docs/providers/spidra.md#quirks).
    raw = json.dumps(SCRAPE)
    assert ", " in raw
    submit = await sb.request(
        "spidra", "POST", "/scrape", content=raw, headers={"content-type": "application/json"}
    )
    assert submit.status_code == 202
    job_id = submit.json()["jobId"]
    assert submit.json()["status"] == "queued"
    assert len(job_id) == 36
    assert job_id.count("-") == 4

    first = (await sb.request("spidra", "GET", f"/scrape/{job_id}")).json()
    assert first["status"] in ("waiting", "delayed")
    assert first["result"] is None
    sb.clock.advance(0.5)
    middle = (await sb.request("spidra", "GET", f"/scrape/{job_id}")).json()
    assert middle["status"] == "active"
    assert 0 < middle["progress"]["progress"] < 1
    sb.clock.advance(0.6)
    done = (await sb.request("spidra", "GET", f"/scrape/{job_id}")).json()
    assert done["status"] == "completed"
    assert done["error"] is None
    result = done["result"]
    assert isinstance(result["content"], dict)  # prompt + output json → AI output object
    assert [d["url"] for d in result["data"]] == ["https://acme.example/pricing"]
    assert result["ai_extraction_failed"] is False
    assert set(result["stats"]) == {
        "durationMs",
        "captchaSolvedCount",
        "inputTokens",
        "outputTokens",
        "totalTokens",
    }
    books = (await sb.stats())["providers"]["spidra"]
    assert books["submits"] == {body_key(SCRAPE): 1}
    assert books["requests"] == {"POST /api/scrape": 1, "GET /api/scrape/{jobId}": 3}


async def test_both_auth_headers_accepted_and_401_body(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario={"providers": {"spidra": {"keys": ["spd_good"]}}})
    bearer = await sb.request(
        "spidra",
        "POST",
        "/scrape",
        json=SCRAPE,
        auth=False,
        headers={"authorization": "Bearer spd_good"},
    )
    header = await sb.request(
        "spidra", "POST", "/scrape", json=SCRAPE, auth=False, headers={"x-api-key": "spd_good"}
    )
    assert (bearer.status_code, header.status_code) == (202, 202)
    wrong = await sb.request(
        "spidra", "GET", "/scrape/x", auth=False, headers={"authorization": "Bearer nope"}
    )
    missing = await sb.request("spidra", "GET", "/scrape/x", auth=False)
    expected = {"status": "error", "message": "Invalid or missing API key", "code": "UNAUTHORIZED"}
    assert (wrong.status_code, wrong.json()) == (401, expected)
    assert (missing.status_code, missing.json()) == (401, expected)


async def test_validation_errors_use_spidra_body(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess()
    four = {"urls": [{"url": f"https://a.example/{i}"} for i in range(4)]}
    reply = await sb.request("spidra", "POST", "/scrape", json=four)
    assert reply.status_code == 400
    assert reply.json() == {
        "status": "error",
        "message": "urls must contain at most 3 items",
        "code": "VALIDATION_ERROR",
        "errors": ["urls must contain at most 3 items"],
    }
    batch = {"urls": [f"https://a.example/{i}" for i in range(51)]}
    reply = await sb.request("spidra", "POST", "/batch/scrape", json=batch)
    assert reply.json()["message"] == "urls must contain at most 50 items"
    missing = await sb.request("spidra", "GET", "/scrape/does-not-exist")
    assert (missing.status_code, missing.json()) == (
        404,
        {"status": "error", "message": "Scrape not found"},
    )
    assert (await sb.stats())["providers"]["spidra"]["submits"] == {}


async def test_failed_scrape_has_error_string(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario={"providers": {"spidra": {"fail_rate": 1.0}}})
    job_id = (await sb.request("spidra", "POST", "/scrape", json=SCRAPE)).json()["jobId"]
    sb.clock.advance(2)
    body = (await sb.request("spidra", "GET", f"/scrape/{job_id}")).json()
    assert body["status"] == "failed"
    assert body["error"] == (
        "Failed to scrape https://acme.example/pricing — net::ERR_NAME_NOT_RESOLVED"
    )


async def test_batch_items_cancel_and_retry(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(
        scenario={"providers": {"spidra": {"partial_rate": 1.0, **FAST["providers"]["spidra"]}}}
    )
    urls = [f"https://shop.example/p/{i}" for i in range(3)]
    submit = await sb.request("spidra", "POST", "/batch/scrape", json={"urls": urls})
    assert submit.status_code == 202
    batch_id = submit.json()["batchId"]
    assert submit.json()["total"] == 3
    assert submit.headers["location"] == f"/api/batch/scrape/{batch_id}"
    sb.clock.advance(2)
    done = (await sb.request("spidra", "GET", f"/batch/scrape/{batch_id}")).json()
    assert done["status"] == "completed"
    assert (done["totalUrls"], done["completedCount"], done["failedCount"]) == (3, 2, 1)
    assert [i["status"] for i in done["items"]] == ["completed", "completed", "failed"]
    retry = await sb.request("spidra", "POST", f"/batch/scrape/{batch_id}/retry", json={})
    assert retry.json() == {"retriedCount": 1}
    sb.clock.advance(2)
    again = (await sb.request("spidra", "GET", f"/batch/scrape/{batch_id}")).json()
    assert (again["completedCount"], again["failedCount"]) == (3, 0)

    other = (await sb.request("spidra", "POST", "/batch/scrape", json={"urls": urls[:1]})).json()
    cancel = await sb.request("spidra", "DELETE", f"/batch/scrape/{other['batchId']}")
    assert cancel.json() == {"status": "cancelled", "cancelledItems": 1, "creditsRefunded": 2}
    after = (await sb.request("spidra", "GET", f"/batch/scrape/{other['batchId']}")).json()
    assert after["status"] == "cancelled"


async def test_crawl_truncates_inline_pages_and_pages_endpoint(
    make_inprocess: MakeInProcess,
) -> None:
    scenario = {
        "providers": {
            "spidra": {"results": {"min": 150, "max": 150}, **FAST["providers"]["spidra"]}
        }
    }
    sb = make_inprocess(scenario=scenario)
    body = {"baseUrl": "https://docs.example", "crawlInstruction": "all", "maxPages": 200}
    job_id = (await sb.request("spidra", "POST", "/crawl", json=body)).json()["jobId"]
    sb.clock.advance(2)
    status = (await sb.request("spidra", "GET", f"/crawl/{job_id}")).json()
    assert status["status"] == "completed"
    assert (len(status["result"]), status["totalPages"], status["resultTruncated"]) == (
        100,
        150,
        True,
    )
    assert status["result"][0]["html"].startswith("http://sandbox.test/_files/spidra/")
    seen = []
    offset = 0
    while True:
        page = (
            await sb.request(
                "spidra", "GET", f"/crawl/{job_id}/pages", params={"offset": offset, "limit": 60}
            )
        ).json()
        seen += page["pages"]
        offset += len(page["pages"])
        if not page["hasMore"]:
            break
    assert len(seen) == 150
    assert len({p["id"] for p in seen}) == 150
    assert json.loads(seen[0]["data"])["title"] == seen[0]["title"]
    too_big = await sb.request("spidra", "GET", f"/crawl/{job_id}/pages", params={"limit": 1001})
    assert too_big.status_code == 400


async def test_crawl_history_lists_crawls_by_page(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario=FAST)
    ids = []
    for n in range(3):
        body = {"baseUrl": f"https://site{n}.example", "maxPages": 2}
        ids.append((await sb.request("spidra", "POST", "/crawl", json=body)).json()["jobId"])
    first = (await sb.request("spidra", "GET", "/crawl/history", params={"limit": 2})).json()
    assert [row["jobId"] for row in first["jobs"]] == ids[:2]
    assert first["jobs"][0]["baseUrl"] == "https://site0.example"
    assert first["jobs"][0]["status"] == "waiting"
    assert (first["total"], first["page"], first["totalPages"]) == (3, 1, 2)
    second = (
        await sb.request("spidra", "GET", "/crawl/history", params={"page": 2, "limit": 2})
    ).json()
    assert [row["jobId"] for row in second["jobs"]] == ids[2:]


async def test_pending_job_cap_and_rate_limit_headers(make_inprocess: MakeInProcess) -> None:
    scenario = {
        "providers": {
            "spidra": {"pending_limits": {"crawl": 2}, "rate_limit": {"requests": 5, "per": 10}}
        }
    }
    sb = make_inprocess(scenario=scenario)
    body = {"baseUrl": "https://docs.example", "crawlInstruction": "all"}
    codes = []
    for n in range(3):
        reply = await sb.request("spidra", "POST", "/crawl", json={**body, "maxPages": n + 1})
        codes.append(reply.status_code)
    assert codes == [202, 202, 429]
    assert reply.json()["code"] == "TOO_MANY_PENDING_JOBS"
    ok = await sb.request("spidra", "GET", "/scrape/x")
    assert ok.headers["ratelimit-limit"] == "5"
    assert ok.headers["ratelimit-remaining"] == "1"
    await sb.request("spidra", "GET", "/scrape/x")
    sb.clock.advance(3)
    limited = await sb.request("spidra", "GET", "/scrape/x")
    assert limited.status_code == 429
    assert limited.json()["code"] == "RATE_LIMITED"
    assert (limited.headers["retry-after"], limited.headers["ratelimit-reset"]) == ("7", "7")
    assert limited.headers["ratelimit-remaining"] == "0"
    books = (await sb.stats())["providers"]["spidra"]
    assert books["throttled"] == 1
    assert books["limit"] == {"requests": 5, "per_seconds": 10.0}
    assert books["max_window_requests"] == 6
    assert len(books["submits"]) == 2  # the refused crawl created nothing


def test_real_socket_crawl_page_download(make_sandbox: MakeSandbox) -> None:
    sb = make_sandbox(
        scenario={"time_scale": 1000, "providers": {"spidra": {"results": {"min": 2, "max": 2}}}}
    )
    base = sb.base_urls["spidra"]
    headers = {"authorization": "Bearer k"}
    job = httpx.post(
        f"{base}/crawl",
        json={"baseUrl": "https://a.example", "crawlInstruction": "x"},
        headers=headers,
    ).json()
    status = {}
    for _ in range(200):
        status = httpx.get(f"{base}/crawl/{job['jobId']}", headers=headers).json()
        if status["status"] == "completed":
            break
    assert status["status"] == "completed"
    page = status["result"][0]
    assert page["markdown"].startswith(sb.origin + "/_files/spidra/")
    text = httpx.get(page["markdown"]).text  # no auth header: a signed URL
    assert text.startswith("# ")
    assert httpx.get(page["markdown"]).status_code == 200  # not single-use
