"""Same seed → byte-identical answers; different seeds differ; repeats get fresh ids."""

from __future__ import annotations

import pytest

from tests.sandbox.conftest import InProcess, MakeInProcess

pytestmark = pytest.mark.anyio

SCENARIO = {"providers": {"pulse": {"partial_rate": 0.3, "fail_rate": 0.2}}}


async def _session(sb: InProcess) -> list[bytes]:
    """Submit a mix of jobs, let them finish, and collect every final answer's bytes."""
    bodies: list[bytes] = []
    ids = []
    for i in range(4):
        reply = await sb.request(
            "spidra", "POST", "/scrape", json={"urls": [{"url": f"https://a.example/{i}"}]}
        )
        ids.append(("spidra", f"/scrape/{reply.json()['jobId']}"))
        bodies.append(reply.content)
    for i in range(3):
        body = {"file_url": f"https://files.example/{i}.pdf", "async": True}
        reply = await sb.request("pulse", "POST", "/extract", json=body)
        ids.append(("pulse", f"/job/{reply.json()['job_id']}"))
        bodies.append(reply.content)
    crawl = {"urls": ["https://docs.example"]}
    run = await sb.request("bulkgrid", "POST", "/api/v1/crawl", json=crawl)
    ids.append(("bulkgrid", f"/api/v1/runs/{run.json()['id']}/results"))
    ids.append(("bulkgrid", f"/api/v1/runs/{run.json()['id']}"))
    sb.clock.advance(10)
    for provider, path in ids:
        bodies.append((await sb.request(provider, "GET", path)).content)
    return bodies


async def test_same_seed_byte_identical(make_inprocess: MakeInProcess) -> None:
    one = await _session(make_inprocess(seed=7, scenario=SCENARIO))
    two = await _session(make_inprocess(seed=7, scenario=SCENARIO))
    assert one == two


async def test_order_of_different_bodies_does_not_matter(make_inprocess: MakeInProcess) -> None:
    a, b = (
        {"file_url": "https://f.example/a.pdf", "async": True},
        {
            "file_url": "https://f.example/b.pdf",
            "async": True,
        },
    )
    first, second = make_inprocess(seed=1), make_inprocess(seed=1)
    a1 = (await first.request("pulse", "POST", "/extract", json=a)).json()["job_id"]
    b1 = (await first.request("pulse", "POST", "/extract", json=b)).json()["job_id"]
    b2 = (await second.request("pulse", "POST", "/extract", json=b)).json()["job_id"]
    a2 = (await second.request("pulse", "POST", "/extract", json=a)).json()["job_id"]
    assert (a1, b1) == (a2, b2)


async def test_different_seed_differs_and_repeats_get_new_ids(
    make_inprocess: MakeInProcess,
) -> None:
    body = {"file_url": "https://f.example/a.pdf", "async": True}
    seven, eight = make_inprocess(seed=7), make_inprocess(seed=8)
    first = (await seven.request("pulse", "POST", "/extract", json=body)).json()["job_id"]
    repeat = (await seven.request("pulse", "POST", "/extract", json=body)).json()["job_id"]
    other = (await eight.request("pulse", "POST", "/extract", json=body)).json()["job_id"]
    assert len({first, repeat, other}) == 3
    books = (await seven.stats())["providers"]["pulse"]["submits"]
    assert list(books.values()) == [2]  # the same body submitted twice shows up as 2
