"""A submit that times out after it was sent is "maybe accepted": never
sent again blindly. (Over real sockets: a server that reads the request and never answers.)"""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from runner.errors import ErrorKind, ProviderCallError, TransportError
from runner.http.client import ProviderClient, make_transport
from runner.http.limits import Gate
from runner.plan import Limits
from runner.providers.base import Request
from runner.providers.spidra import ADAPTER as SPIDRA

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Silent:
    """A server that reads each request whole, then says nothing, keeping the connection
    open until `close`."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.bodies: list[object] = []
        self.stop = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Silent:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:

        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length:")),
            0,
        )  # fmt: skip
        body = await reader.readexactly(length)
        self.received.append(head)
        self.bodies.append(json.loads(body))
        await self.stop.wait()  # longer than any client timeout below
        writer.close()

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.sleep(0.01)  # let the handlers hang up
        assert self.server is not None
        self.server.close()


async def test_a_post_that_times_out_after_sending_counts_as_sent() -> None:
    transport = make_transport(1, timeout=0.3)
    async with Silent() as server:
        try:
            with pytest.raises(TransportError) as info:
                await transport.request("POST", server.base + "/scrape", headers={}, json={"a": 1})
            assert info.value.sent is True
            assert server.bodies == [{"a": 1}]
        finally:
            await transport.aclose()


async def test_a_timed_out_submit_is_sent_once_and_not_proven_unaccepted() -> None:
    async with Silent() as server:
        await submit_once(server)


async def submit_once(server: Silent) -> None:
    client = ProviderClient(
        provider="spidra",
        base_url=server.base,
        api_key="secret-key",
        adapter=SPIDRA,
        gate=Gate("spidra", Limits(), pool_size=1),
        transport=make_transport(1, timeout=0.3),
        rng=random.Random(0),
    )
    try:
        with pytest.raises(ProviderCallError) as info:
            await client.send(Request("POST", "/scrape", "submit", json={"urls": []}))
        assert info.value.not_accepted is False  # the engine must reconcile, not re-send
        assert info.value.kind is ErrorKind.TRANSIENT
        assert len(server.received) == 1  # a POST is never retried by the client
    finally:
        await client.transport.aclose()
