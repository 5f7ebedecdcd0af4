"""Pulse contract: /extract (async and sync), /job/{id}, cancel, large results
(docs/providers/pulse.md)."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import MakeSandbox
from tests.sandbox.conftest import MakeInProcess

pytestmark = pytest.mark.anyio

EXTRACT = {"file_url": "https://files.example/invoice-1.pdf", "async": True}
FAST = {"duration": {"min": 1, "max": 1}}


async def test_async_extract_lifecycle(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario={"providers": {"pulse": FAST}})
    submit = await sb.request("pulse", "POST", "/extract", json=EXTRACT)
    assert submit.status_code == 200
    assert submit.json()["status"] == "pending"
    job_id = submit.json()["job_id"]
    statuses = []
    for _ in range(3):
        body = (await sb.request("pulse", "GET", f"/job/{job_id}")).json()
        statuses.append(body["status"])
        sb.clock.advance(0.5)
    assert statuses == ["pending", "processing", "completed"]
    assert body["job_id"] == job_id
    assert set(body["result"]) == {"extraction_id", "markdown", "page_count", "plan-info"}
    assert "error" not in body


async def test_sync_extract_answers_inline(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess()
    reply = await sb.request("pulse", "POST", "/extract", json={"file_url": EXTRACT["file_url"]})
    assert reply.status_code == 200
    assert "job_id" not in reply.json()
    assert reply.json()["markdown"].startswith("# ")


async def test_tables_returns_tables_id(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess()
    body = {"extraction_id": "e1", "async": True, "tables_config": {"merge": True}}
    reply = (await sb.request("pulse", "POST", "/tables", json=body)).json()
    assert "tables_id" in reply
    assert "job_id" not in reply
    polled = (await sb.request("pulse", "GET", f"/job/{reply['tables_id']}")).json()
    assert polled["status"] == "pending"


async def test_cancel_spelling_and_both_endpoints(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(scenario={"providers": {"pulse": FAST}})
    first = (await sb.request("pulse", "POST", "/extract", json=EXTRACT)).json()["job_id"]
    second = (
        await sb.request("pulse", "POST", "/extract", json={**EXTRACT, "pages": "1-2"})
    ).json()["job_id"]
    deleted = await sb.request("pulse", "DELETE", f"/job/{first}")
    posted = await sb.request("pulse", "POST", f"/cancel/{second}")
    assert deleted.json() == {"job_id": first, "message": "Job cancelled successfully"}
    assert posted.json() == {"job_id": second, "message": "Job cancelled successfully"}
    sb.clock.advance(5)
    for job_id in (first, second):
        assert (await sb.request("pulse", "GET", f"/job/{job_id}")).json()["status"] == "canceled"


async def test_failed_and_expired(make_inprocess: MakeInProcess) -> None:
    scenario = {
        "providers": {
            "pulse": {**FAST, "expire_after": "1m", "jobs": {"schema": {"fail_rate": 1.0}}}
        }
    }
    sb = make_inprocess(scenario=scenario)
    ok = (await sb.request("pulse", "POST", "/extract", json=EXTRACT)).json()["job_id"]
    schema = {"extraction_id": "e1", "async": True, "schema_config": {"input_schema": {}}}
    bad = (await sb.request("pulse", "POST", "/schema", json=schema)).json()["job_id"]
    sb.clock.advance(2)
    failed = (await sb.request("pulse", "GET", f"/job/{bad}")).json()
    assert failed["status"] == "failed"
    assert failed["error"].startswith("Failed to process document: ")
    sb.clock.advance(60)
    expired = (await sb.request("pulse", "GET", f"/job/{ok}")).json()
    assert expired["status"] == "expired"
    assert expired["result"] == {"expired": True, "message": "Result retention period has passed"}


async def test_auth_and_validation_bodies(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess()
    denied = await sb.request("pulse", "POST", "/extract", json=EXTRACT, auth=False)
    assert denied.status_code == 401
    assert denied.json() == {
        "error": {"code": "AUTH_001", "message": "Invalid or missing API key", "details": {}}
    }
    invalid = await sb.request("pulse", "POST", "/extract", json={"async": True})
    assert invalid.status_code == 400
    assert invalid.json()["error"]["message"] == "file_url is required and must be an http(s) URL"
    missing = await sb.request("pulse", "GET", "/job/nope")
    assert missing.status_code == 404


def test_large_result_is_single_use_then_410(make_sandbox: MakeSandbox) -> None:
    scenario = {
        "time_scale": 1000,
        "providers": {"pulse": {"result_bytes": 50_000, "large_result_bytes": 10_000}},
    }
    sb = make_sandbox(scenario=scenario)
    headers = {"x-api-key": "k"}
    job_id = httpx.post(f"{sb.base_urls['pulse']}/extract", json=EXTRACT, headers=headers).json()[
        "job_id"
    ]
    body: dict[str, object] = {}
    for _ in range(200):
        body = httpx.get(f"{sb.base_urls['pulse']}/job/{job_id}", headers=headers).json()
        if body["status"] == "completed":
            break
    result = body["result"]
    assert isinstance(result, dict)
    assert result["is_url"] is True
    url = result["url"]
    assert url.startswith(sb.origin + "/_files/pulse/")
    # bare GET, no key (docs/providers/pulse.md#results-and-downloads)
    first = httpx.get(url, follow_redirects=True)
    assert first.status_code == 200
    assert len(first.content) > 50_000
    assert set(first.json()) == {"extraction_id", "markdown", "page_count", "plan-info"}
    second = httpx.get(url, headers={"X-Api-Key": "k"})
    assert second.status_code == 410
    stats = httpx.get(sb.origin + "/_sandbox/stats").json()["providers"]["pulse"]
    assert stats["downloads"] == 2
    assert stats["keyed_downloads"] == 1  # the second one brought a key: booked
    assert "GET /_files" not in " ".join(stats["requests"])
