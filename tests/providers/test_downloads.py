"""ProviderClient.download: API downloads spend the provider's budget with the key; out-of-band
ones (signed URLs, third-party documents) spend none, carry no key and have their own cap."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import httpx
import pytest

from runner.errors import ErrorKind, ProviderCallError
from runner.http.backoff import RetryPolicy
from runner.http.client import OFFSITE_CONCURRENCY, HttpxTransport, ProviderClient
from runner.http.limits import Gate
from runner.plan import Limits, Rate
from runner.providers.skop import ADAPTER as SKOP

KEY = "sk-very-secret-key"
ORIGIN = "https://api.example.test"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def client(handler: object, *, base: str = ORIGIN) -> ProviderClient:
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))  # type: ignore[arg-type]
    # Skop's published 60/min: a charged download would wait a second per file.
    limits = Limits(requests=Rate(1, 60.0), endpoints={"download": Rate(1, 60.0)})
    return ProviderClient(
        provider="skop",
        base_url=base,
        api_key=KEY,
        adapter=SKOP,
        gate=Gate("skop", limits, pool_size=4),
        transport=transport,
        retry=RetryPolicy(attempts=3, base=0.001, cap=0.002),
        rng=random.Random(0),
    ).for_job("job-1")


async def test_out_of_band_downloads_spend_no_provider_budget(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"%PDF-1.7")

    c = client(handler)
    with anyio.fail_after(5):  # charged at 1/min, the second file alone would wait 60 s
        for n in range(5):
            url = f"https://docs.third-party.test/report-{n}.pdf"
            assert await c.download(url, tmp_path / f"{n}.pdf", send_key=False) == 8
    assert c.gate.sent == 0
    assert all("x-api-key" not in r.headers and "authorization" not in r.headers for r in seen)
    await c.download(f"{ORIGIN}/large/1", tmp_path / "api.bin", send_key=True)
    assert c.gate.sent == 1  # an API download is an API request
    assert seen[-1].headers["authorization"] == f"Bearer {KEY}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "0.pdf", "1.pdf", "2.pdf", "3.pdf", "4.pdf", "api.bin",
    ]  # fmt: skip


async def test_out_of_band_downloads_have_their_own_small_concurrency_cap(
    tmp_path: Path,
) -> None:
    running = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.005)
        running -= 1
        return httpx.Response(200, content=b"x")

    c = client(handler)
    async with anyio.create_task_group() as tg:
        for n in range(OFFSITE_CONCURRENCY * 3):
            url = f"https://s3.test/f{n}?sig=1"
            tg.start_soon(lambda u=url, n=n: c.download(u, tmp_path / f"f{n}", send_key=False))
    assert peak == OFFSITE_CONCURRENCY
    assert len(list(tmp_path.iterdir())) == OFFSITE_CONCURRENCY * 3


async def test_a_storage_429_is_retried_without_pausing_the_provider(tmp_path: Path) -> None:
    answers = [
        httpx.Response(429, headers={"retry-after": "0"}, text="SlowDown"),
        httpx.Response(200, content=b"ok"),
    ]
    c = client(lambda request: answers.pop(0))
    assert await c.download("https://s3.test/a?sig=1", tmp_path / "a", send_key=False) == 2
    assert c.gate.throttles == 0
    assert c.gate.paused_until < c.gate.clock.now()


async def test_an_expired_signature_is_not_mistaken_for_a_refused_key(tmp_path: Path) -> None:
    c = client(lambda request: httpx.Response(403, text="<Error>Request has expired</Error>"))
    with pytest.raises(ProviderCallError) as caught:
        await c.download("https://s3.test/a?sig=1", tmp_path / "a", send_key=False)
    assert caught.value.kind is ErrorKind.INVALID
    assert str(caught.value) == (
        "skop job job-1: GET /a: HTTP 403: <Error>Request has expired</Error>"
    )
    assert c.gate.stopped is None
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


async def test_the_key_goes_only_under_the_base_path_of_the_api(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"x")

    c = client(handler, base=f"{ORIGIN}/v1")
    assert c.is_api_url(f"{ORIGIN}/v1/runs/1/download")
    assert not c.is_api_url(f"{ORIGIN}/_files/lobstr/t/export.csv")
    assert not c.is_api_url(f"{ORIGIN}/v10/x")
    await c.download(f"{ORIGIN}/_files/lobstr/t/export.csv", tmp_path / "e.csv", send_key=True)
    assert "authorization" not in seen[0].headers
    assert c.gate.sent == 0
