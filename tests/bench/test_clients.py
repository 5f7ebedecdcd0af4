"""A smoke check of the clients the benchmarks compare (tests/bench/clients.py), over real
sockets: each one answers, and tells a request dropped after sending from one refused, so
bench_engine measures clients that behave like the product's."""

from __future__ import annotations

import asyncio

import pytest

from runner.errors import TransportError
from tests.bench.clients import CLIENTS, available, make
from tests.test_http import hang_up_after_reading, refused_url

pytestmark = pytest.mark.anyio

BENCH_CLIENTS = [
    pytest.param(name, marks=pytest.mark.skipif(not available(name), reason="the bench extra"))
    for name in CLIENTS
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def answering(seen: list[bytes]) -> tuple[str, asyncio.Server]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", server


@pytest.mark.parametrize("name", BENCH_CLIENTS)
async def test_a_bench_client_encodes_the_query_like_httpx_and_reads_the_reply(name: str) -> None:
    seen: list[bytes] = []
    origin, server = await answering(seen)
    transport = make(name, 1)
    try:
        params = {"page": 2, "flag": True, "k": ["a", "b"]}
        reply = await transport.request("GET", origin + "/x%2Fy", headers={}, params=params)
        assert reply.json() == {}
        assert seen == [b"GET /x%2Fy?page=2&flag=true&k=a&k=b HTTP/1.1\r\n"]
    finally:
        await transport.aclose()
        server.close()


@pytest.mark.parametrize("name", BENCH_CLIENTS)
async def test_a_bench_client_tells_dropped_after_sending_from_refused(name: str) -> None:
    url, server = await hang_up_after_reading()
    transport = make(name, 1)
    try:
        with pytest.raises(TransportError) as dropped:
            await transport.request("POST", url, headers={}, json={"a": 1})
        with pytest.raises(TransportError) as refused:
            await transport.request("POST", refused_url(), headers={}, json={"a": 1})
    finally:
        await transport.aclose()
        server.close()
    assert dropped.value.sent is True
    assert (refused.value.sent, refused.value.reason) == (False, "connection refused")


def test_an_unknown_bench_client_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown HTTP client 'curl'"):
        make("curl", 1)
