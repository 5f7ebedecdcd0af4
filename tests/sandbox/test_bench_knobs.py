"""What benchmarks need from the sandbox: an undeclared in-flight cap per provider
(`hidden_in_flight`), the drawn durations of every job (`GET /_sandbox/jobs`), and
`speed_up` (what `runner sandbox --time-scale K` applies)."""

from __future__ import annotations

import pytest

from runner.errors import UsageError
from runner.sandbox.scenario import RateLimit, Scenario, Span, speed_up
from tests.sandbox.conftest import ORIGIN, MakeInProcess

pytestmark = pytest.mark.anyio

EXTRACT = {"file_url": "https://files.example/a.pdf", "async": True}


async def test_a_hidden_in_flight_cap_refuses_submits_until_a_job_ends(
    make_inprocess: MakeInProcess,
) -> None:
    scenario = {"providers": {"pulse": {"hidden_in_flight": 2, "duration": 10}}}
    sb = make_inprocess(scenario=scenario)
    codes = [
        (
            await sb.request(
                "pulse", "POST", "/extract", json={**EXTRACT, "file_url": f"https://f/{n}"}
            )
        )
        for n in range(3)
    ]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert codes[2].headers["retry-after"] == "1"
    sb.clock.advance(9.9)
    refused = await sb.request("pulse", "POST", "/extract", json=EXTRACT)
    assert refused.status_code == 429
    sb.clock.advance(0.2)  # both jobs have ended: room for two more
    accepted = [
        (
            await sb.request(
                "pulse", "POST", "/extract", json={**EXTRACT, "file_url": f"https://g/{n}"}
            )
        )
        for n in range(2)
    ]
    assert [r.status_code for r in accepted] == [200, 200]
    books = (await sb.stats())["providers"]["pulse"]
    assert (books["busy"], books["throttled"]) == (2, 0)


async def test_each_provider_answers_its_own_busy_error(make_inprocess: MakeInProcess) -> None:
    sb = make_inprocess(
        scenario={
            "providers": {
                "skop": {"hidden_in_flight": 1},
                "spidra": {"hidden_in_flight": 1},
                "lobstr": {"hidden_in_flight": 1},
            }
        }
    )
    skop = {"website": "https://investors.example/", "prompt": "Find the annual reports"}
    for _ in range(2):
        reply = await sb.request("skop", "POST", "/scrape/", json=skop)
    assert (reply.status_code, reply.json()["error"]) == (429, "concurrency_limit_exceeded")
    scrape = {"urls": [{"url": "https://a.example/"}], "output": "markdown"}
    for _ in range(2):
        reply = await sb.request("spidra", "POST", "/scrape", json=scrape)
    assert (reply.status_code, reply.json()["code"]) == (429, "TOO_MANY_PENDING_JOBS")
    for n in range(2):
        squid = (await sb.request("lobstr", "POST", "/squids", json={"crawler": "maps"})).json()
        await sb.request("lobstr", "POST", f"/squids/{squid['id']}", json={"params": {"q": n}})
        reply = await sb.request("lobstr", "POST", "/runs", json={"squid": squid["id"]})
    assert (reply.status_code, reply.json()["type"]) == (400, "ConcurrencyLimitExceeded")


async def test_the_jobs_endpoint_reports_each_drawn_duration(
    make_inprocess: MakeInProcess,
) -> None:
    sb = make_inprocess(
        scenario={"time_scale": 4, "providers": {"pulse": {"duration": {"min": 8, "max": 12}}}}
    )
    job_id = (await sb.request("pulse", "POST", "/extract", json=EXTRACT)).json()["job_id"]
    drawn = (await sb.request("pulse", "GET", ORIGIN + "/_sandbox/jobs")).json()
    assert drawn["time_scale"] == 4
    (job,) = drawn["providers"]["pulse"]
    assert (job["id"], job["kind"]) == (job_id, "extract")
    assert 8 <= job["duration"] <= 12
    assert job["wall_duration"] == pytest.approx(job["duration"] / 4, abs=1e-5)
    assert job["created"] == sb.clock.now
    # The drawn duration is the one the job lives by: done just after it, running before.
    sb.clock.advance(job["wall_duration"] - 0.01)
    running = (await sb.request("pulse", "GET", f"/job/{job_id}")).json()["status"]
    sb.clock.advance(0.02)
    done = (await sb.request("pulse", "GET", f"/job/{job_id}")).json()["status"]
    assert (running, done) == ("processing", "completed")
    assert drawn["providers"]["skop"] == []


def test_speed_up_divides_durations_and_rate_windows() -> None:
    scenario = Scenario.from_dict(
        {
            "time_scale": 2,
            "providers": {
                "spidra": {
                    "rate_limit": {"requests": 300, "per": "15m"},
                    "jobs": {"crawl": {"duration": 60}},
                }
            },
        }
    )
    fast = speed_up(scenario, 10)
    assert fast.time_scale == 20
    assert fast.knobs("spidra").rate_limit == RateLimit(300, 90.0)
    assert fast.knobs("spidra", "crawl").rate_limit == RateLimit(300, 90.0)
    assert fast.knobs("spidra", "crawl").duration == Span(60, 60)  # virtual: time_scale does it
    assert fast.knobs("pulse").rate_limit is None
    with pytest.raises(UsageError, match="time scale 0: must be positive"):
        speed_up(scenario, 0)
