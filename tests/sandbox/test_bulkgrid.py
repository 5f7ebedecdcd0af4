"""Bulkgrid contract: runs, paged results, content, screenshots, repr list params
(docs/providers/bulkgrid.md)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import MakeSandbox
from tests.sandbox.conftest import MakeInProcess

pytestmark = pytest.mark.anyio

CRAWL = {"urls": ["https://docs.example"], "options": {"screenshot": "screenshot"}}
SCENARIO = {
    "providers": {"bulkgrid": {"duration": {"min": 1, "max": 1}, "results": {"min": 5, "max": 5}}}
}


async def test_crawl_run_counters_and_statistics(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario=SCENARIO)
    run = await sb.request("bulkgrid", "POST", "/api/v1/crawl", json=CRAWL)
    assert run.status_code == 201
    data = run.json()
    assert (data["status"], data["type"], data["queued"], data["done"]) == (
        "pending",
        "crawl",
        5,
        0,
    )
    assert len(data["id"]) == 36
    sb.clock.advance(0.6)
    mid = (await sb.request("bulkgrid", "GET", f"/api/v1/runs/{data['id']}")).json()
    assert mid["status"] == "processing"
    assert mid["queued"] + mid["in_progress"] + mid["done"] + mid["failed"] == 5
    sb.clock.advance(1)
    done = (await sb.request("bulkgrid", "GET", f"/api/v1/runs/{data['id']}")).json()
    assert (done["status"], done["done"], done["failed"], done["queued"]) == ("completed", 5, 0, 0)
    assert done["statistics"]["total_results"] == 5
    assert done["statistics"]["success_count"] == 5
    assert done["source"] is None


async def test_results_pages_and_incremental_repr_lists(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario=SCENARIO)
    run_id = (await sb.request("bulkgrid", "POST", "/api/v1/crawl", json=CRAWL)).json()["id"]
    sb.clock.advance(2)
    url = f"/api/v1/runs/{run_id}/results"
    first = (await sb.request("bulkgrid", "GET", url, params={"page": 1, "limit": 2})).json()
    second = (await sb.request("bulkgrid", "GET", url, params={"page": 3, "limit": 2})).json()
    assert (first["page"], first["limit"], first["total"], len(first["results"])) == (1, 2, 5, 2)
    assert len(second["results"]) == 1
    known = [r["id"] for r in first["results"]]
    # The SDK sends list params through str(): known=['a', 'b'] (docs/providers/bulkgrid.md#quirks).
    inc = await sb.request(
        "bulkgrid", "GET", url, params={"incremental": "true", "known": str(known), "limit": 100}
    )
    assert inc.request.url.params["known"] == str(known)
    body = inc.json()
    assert body["total"] == 3
    assert not {r["id"] for r in body["results"]} & set(known)
    assert len(body["ids"]) == 5


async def test_content_and_screenshot(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario=SCENARIO)
    run_id = (await sb.request("bulkgrid", "POST", "/api/v1/crawl", json=CRAWL)).json()["id"]
    sb.clock.advance(2)
    result = (await sb.request("bulkgrid", "GET", f"/api/v1/runs/{run_id}/results")).json()[
        "results"
    ][0]
    base = f"/api/v1/runs/{run_id}/results/{result['id']}"
    # The SDK sends Accept: application/json even for text (docs/providers/bulkgrid.md#quirks).
    accept = {"accept": "application/json"}
    markdown = await sb.request(
        "bulkgrid", "GET", base + "/content", params={"type": "markdown"}, headers=accept
    )
    assert markdown.status_code == 200
    assert markdown.text.startswith("# ")
    links = await sb.request("bulkgrid", "GET", base + "/content", params={"type": "links"})
    assert links.text.splitlines()[0] == "https://docs.example"
    bad = await sb.request("bulkgrid", "GET", base + "/content", params={"type": "pdf"})
    assert bad.status_code == 400
    assert bad.json() == {
        "error": "type must be one of: markdown, cleanHtml, rawHtml, links",
        "code": "VALIDATION_ERROR",
    }
    assert "x-request-id" in bad.headers
    shot = await sb.request("bulkgrid", "GET", base + "/screenshot")
    assert shot.json()["signedUrl"].startswith("http://sandbox.test/_files/bulkgrid/")
    raw = await sb.request("bulkgrid", "GET", base + "/screenshot", params={"download": "true"})
    assert raw.content.startswith(b"\x89PNG\r\n\x1a\n")


async def test_auth_validation_cancel_retry_delete_list(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario=SCENARIO)
    denied = await sb.request("bulkgrid", "GET", "/api/v1/runs", auth=False)
    assert (denied.status_code, denied.json()) == (401, {"error": "Unauthorized"})
    invalid = await sb.request("bulkgrid", "POST", "/api/v1/extract", json={"urls": []})
    assert invalid.status_code == 400
    assert invalid.json()["details"][0] == {
        "path": "urls",
        "message": "Required: a non-empty array of URLs",
    }
    generic = await sb.request(
        "bulkgrid", "POST", "/api/v1/runs", json={"url": "https://a.example"}
    )
    assert generic.status_code == 400  # `type` is required on /runs
    extract = {"urls": ["https://a.example"], "query": "prices", "schema": {"type": "object"}}
    run_id = (await sb.request("bulkgrid", "POST", "/api/v1/extract", json=extract)).json()["id"]
    assert (await sb.request("bulkgrid", "POST", f"/api/v1/runs/{run_id}/cancel")).json() == {
        "success": True
    }
    sb.clock.advance(5)
    run = (await sb.request("bulkgrid", "GET", f"/api/v1/runs/{run_id}")).json()
    assert run["status"] == "cancelled"
    retry = await sb.request("bulkgrid", "POST", f"/api/v1/runs/{run_id}/retry", json={})
    assert retry.json()["id"] != run_id
    assert retry.json()["type"] == "extract"
    listing = (
        await sb.request("bulkgrid", "GET", "/api/v1/runs", params={"status": "cancelled"})
    ).json()
    assert [r["id"] for r in listing["runs"]] == [run_id]
    assert (await sb.request("bulkgrid", "DELETE", f"/api/v1/runs/{run_id}")).json() == {
        "success": True
    }
    gone = await sb.request("bulkgrid", "GET", f"/api/v1/runs/{run_id}")
    assert gone.status_code == 404


def test_signed_screenshot_url_over_socket(make_sandbox: MakeSandbox) -> None:
    sb = make_sandbox(scenario={"time_scale": 1000})
    headers = {"x-api-key": "k"}
    base = sb.base_urls["bulkgrid"] + "/api/v1/runs"
    run_id = httpx.post(
        sb.base_urls["bulkgrid"] + "/api/v1/crawl", json=CRAWL, headers=headers
    ).json()["id"]
    for _ in range(200):
        if httpx.get(f"{base}/{run_id}", headers=headers).json()["status"] == "completed":
            break
    result = httpx.get(f"{base}/{run_id}/results", headers=headers).json()["results"][0]
    signed = httpx.get(f"{base}/{run_id}/results/{result['id']}/screenshot", headers=headers).json()
    png = httpx.get(signed["signedUrl"])  # no key leaves for signed URLs
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")
