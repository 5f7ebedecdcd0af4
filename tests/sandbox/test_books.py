"""Books and limits: sliding windows, peaks, throttling, injected faults, reset."""

from __future__ import annotations

import time

import httpx
import pytest

from runner.providers.replies import parse_time
from runner.sandbox import determinism as det
from runner.sandbox.limits import SlidingWindow, WindowPeak
from tests.sandbox.conftest import MakeInProcess

pytestmark = pytest.mark.anyio


def test_sliding_window_half_open() -> None:
    window = SlidingWindow(2, 1.0)
    assert window.acquire(0.0) is None
    assert window.acquire(0.5) is None
    assert window.acquire(0.9) == pytest.approx(0.1)
    assert window.acquire(1.0) is None  # the request at 0.0 left the window (1.0-1, 1.0]
    assert window.remaining(1.0) == 0


def test_window_peak_finds_busiest_window() -> None:
    peak = WindowPeak(1.0)
    for t in (0.0, 0.2, 0.9, 1.1, 1.15, 1.19, 3.0):
        peak.add(t)
    assert peak.peak == 5  # 0.2, 0.9, 1.1, 1.15, 1.19 lie within (0.19, 1.19]


async def test_throttled_requests_counted_and_create_nothing(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(
        scenario={"providers": {"pulse": {"rate_limit": {"requests": 2, "per": 1}}}}
    )
    codes = []
    for i in range(4):
        body = {"file_url": f"https://f.example/{i}.pdf", "async": True}
        codes.append((await sb.request("pulse", "POST", "/extract", json=body)).status_code)
    assert codes == [200, 200, 429, 429]
    limited = await sb.request("pulse", "GET", "/job/x")
    assert limited.json() == {
        "error": {"code": "RATE_001", "message": "Rate limit exceeded", "details": {}}
    }
    assert limited.headers["retry-after"] == "1"
    books = (await sb.stats())["providers"]["pulse"]
    assert books["requests"] == {"GET /job/{job_id}": 1, "POST /extract": 4}
    assert (books["throttled"], books["max_window_requests"], len(books["submits"])) == (3, 5, 2)
    # 401s count as requests too.
    await sb.request("pulse", "GET", "/job/x", auth=False)
    assert (await sb.stats())["providers"]["pulse"]["requests"]["GET /job/{job_id}"] == 2


async def test_error_burst_and_reset(make_inprocess: MakeInProcess) -> None:
    scenario = {"providers": {"spidra": {"error_burst": {"status": 503, "count": 2, "every": 4}}}}
    sb = make_inprocess(scenario=scenario)
    codes = [(await sb.request("spidra", "GET", "/scrape/x")).status_code for _ in range(8)]
    assert codes == [404, 404, 503, 503, 404, 404, 503, 503]
    busy = await sb.request("spidra", "GET", "/scrape/x")
    assert busy.status_code == 404
    books = (await sb.stats())["providers"]["spidra"]
    assert books["errors_injected"] == 4
    async with httpx.AsyncClient(transport=sb.transport) as client:
        reset = await client.post("http://sandbox.test/_sandbox/reset")
    assert reset.json() == {"reset": True}
    after = (await sb.stats())["providers"]["spidra"]
    assert (after["requests"], after["errors_injected"], after["max_window_requests"]) == ({}, 0, 0)


async def test_dropped_submit_still_creates_the_job_in_process(
    make_inprocess: MakeInProcess,
) -> None:
    sb = make_inprocess(scenario={"providers": {"pulse": {"drop_connection_rate": 1.0}}})
    body = {"file_url": "https://f.example/a.pdf", "async": True}
    with pytest.raises(httpx.RemoteProtocolError):
        await sb.request("pulse", "POST", "/extract", json=body)
    books = (await sb.stats())["providers"]["pulse"]
    assert (books["dropped"], list(books["submits"].values())) == (1, [1])


@pytest.mark.parametrize(("after_accept", "created"), [(False, 0), (True, 1)])
async def test_an_injected_submit_error_is_booked_as_lost_or_unanswered(
    make_inprocess: MakeInProcess, after_accept: bool, created: int
) -> None:
    burst = {"status": 500, "count": 1, "every": 2, "after_accept": after_accept, "on": "submits"}
    sb = make_inprocess(scenario={"providers": {"pulse": {"error_burst": burst}}})
    poll = await sb.request("pulse", "GET", "/job/x")  # never counted by an `on: submits` burst
    first = {"file_url": "https://f.example/1.pdf", "async": True}
    second = {"file_url": "https://f.example/2.pdf", "async": True}
    codes = [(await sb.request("pulse", "POST", "/extract", json=b)).status_code
             for b in (first, second)]  # fmt: skip
    assert (poll.status_code, codes) == (404, [200, 500])
    books = (await sb.stats())["providers"]["pulse"]
    key = det.body_key(second)
    book, other = ("submits_unanswered", "submits_lost")[:: 1 if after_accept else -1]
    assert (books[book], books[other]) == ({key: 1}, {})
    assert books["submits"].get(key, 0) == created  # the job exists only when accepted first
    assert (books["errors_injected"], books["errors_after_accept"]) == (1, created)


async def test_listings_carry_the_real_creation_time_and_payloads_the_virtual_one(
    make_inprocess: MakeInProcess,
) -> None:
    sb = make_inprocess()
    before = time.time()
    body = {"urls": ["https://a.example/"], "type": "crawl"}
    run = (await sb.request("bulkgrid", "POST", "/api/v1/crawl", json=body)).json()
    sb.clock.advance(2.0)
    later = {"urls": ["https://b.example/"], "type": "crawl"}
    await sb.request("bulkgrid", "POST", "/api/v1/crawl", json=later)
    params = {"orderBy": "-created_at"}
    listed = (await sb.request("bulkgrid", "GET", "/api/v1/runs", params=params)).json()["runs"]
    times = [parse_time(r["created_at"]) or 0.0 for r in listed]
    assert [r["urls"] for r in listed] == [later["urls"], body["urls"]]  # newest first
    assert times[0] == pytest.approx(times[1] + 2.0, abs=0.01)  # the clock moved both
    assert times[1] == pytest.approx(before, abs=5.0)
    assert run["created_at"].startswith("2026-01-05")  # the virtual epoch, byte-stable
