"""ProviderClient over httpx.MockTransport: retry rules, error translation, gate feedback."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from runner.errors import ErrorKind, ProviderCallError, TransportError
from runner.http.backoff import RetryPolicy
from runner.http.client import Bounds, HttpxTransport, ProviderClient, make_transport
from runner.http.limits import Gate
from runner.plan import Limits, Rate
from runner.providers.base import Adapter, Request
from runner.providers.pulse import ADAPTER as PULSE
from runner.providers.spidra import ADAPTER as SPIDRA
from tests import hostile

KEY = "sk-very-secret-key"
BASE = "https://api.example.test/api"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


Handler = Callable[[httpx.Request], httpx.Response]


def client(
    handler: Handler, *, limits: Limits | None = None, adapter: Adapter = SPIDRA
) -> ProviderClient:
    transport = HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    return ProviderClient(
        provider=adapter.info.name,
        base_url=BASE,
        api_key=KEY,
        adapter=adapter,
        gate=Gate("spidra", limits or Limits(), pool_size=4),
        transport=transport,
        retry=RetryPolicy(attempts=3, base=0.001, cap=0.002),
        rng=random.Random(0),
    ).for_job("job-1")


def scripted(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


GET = Request("GET", "/scrape/abc", "status")
POST = Request("POST", "/scrape", "submit", json={"urls": [{"url": "https://x.test"}]})


async def test_get_is_sent_with_bearer_auth_to_the_base_url() -> None:
    handler, seen = scripted(httpx.Response(200, json={"status": "waiting"}))
    reply = await client(handler).send(GET)
    assert reply.json() == {"status": "waiting"}
    assert str(seen[0].url) == "https://api.example.test/api/scrape/abc"
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"


async def test_get_retries_5xx_then_succeeds() -> None:
    handler, seen = scripted(
        httpx.Response(502, json={"message": "bad gateway"}),
        httpx.Response(500, json={"message": "oops"}),
        httpx.Response(200, json={"status": "active"}),
    )
    reply = await client(handler).send(GET)
    assert reply.status_code == 200
    assert len(seen) == 3


async def test_get_retries_dropped_connections_and_timeouts() -> None:
    handler, seen = scripted(
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadTimeout("timed out"),
        httpx.Response(200, json={"status": "active"}),
    )
    assert (await client(handler).send(GET)).status_code == 200
    assert len(seen) == 3


async def test_get_retries_are_bounded() -> None:
    handler, seen = scripted(httpx.Response(500, json={"message": "down"}))
    with pytest.raises(ProviderCallError) as info:
        await client(handler).send(GET)
    assert len(seen) == 3
    assert info.value.kind is ErrorKind.TRANSIENT
    assert str(info.value) == "spidra job job-1: GET /scrape/abc: HTTP 500: down"


async def test_post_is_never_retried_after_a_5xx_and_is_not_provably_unaccepted() -> None:
    handler, seen = scripted(httpx.Response(500, json={"message": "oops"}))
    with pytest.raises(ProviderCallError) as info:
        await client(handler).send(POST)
    assert len(seen) == 1
    assert info.value.kind is ErrorKind.TRANSIENT
    assert info.value.not_accepted is False


async def test_post_dropped_after_sending_is_ambiguous() -> None:
    handler, seen = scripted(httpx.RemoteProtocolError("Server disconnected"))
    with pytest.raises(ProviderCallError) as info:
        await client(handler).send(POST)
    assert len(seen) == 1
    assert info.value.not_accepted is False
    # httpx's exception is translated once and chained, never lost
    assert isinstance(info.value.__cause__, TransportError)
    assert isinstance(info.value.__cause__.__cause__, httpx.RemoteProtocolError)


async def test_post_connection_refused_is_provably_not_accepted() -> None:
    handler, _ = scripted(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(ProviderCallError) as info:
        await client(handler).send(POST)
    assert info.value.not_accepted is True
    assert info.value.provider == "spidra"
    assert info.value.job_id == "job-1"
    assert KEY not in str(info.value)


async def test_post_429_pauses_the_provider_and_is_not_accepted() -> None:
    handler, seen = scripted(
        httpx.Response(
            429,
            headers={"Retry-After": "0.05"},
            json={"status": "error", "message": "Too many requests", "code": "RATE_LIMITED"},
        )
    )
    c = client(handler, limits=Limits(requests=Rate(1000, 1.0)))
    with pytest.raises(ProviderCallError) as info:
        await c.send(POST)
    assert len(seen) == 1
    assert info.value.kind is ErrorKind.RATE_LIMITED
    assert info.value.not_accepted is True
    assert info.value.retry_after == 0.05
    assert c.gate.throttles == 1
    assert c.gate.paused_until >= c.gate.clock.now() + 0.04


async def test_get_after_429_waits_out_the_pause_then_succeeds() -> None:
    handler, seen = scripted(
        httpx.Response(429, headers={"Retry-After": "0.03"}, json={"message": "slow"}),
        httpx.Response(200, json={"status": "active"}),
    )
    c = client(handler, limits=Limits(requests=Rate(1000, 1.0)))
    start = c.gate.clock.now()
    assert (await c.send(GET)).status_code == 200
    assert c.gate.clock.now() - start >= 0.03
    assert len(seen) == 2


async def test_spidra_busy_codes_are_not_accepted_and_carry_the_body_hint() -> None:
    handler, _ = scripted(
        httpx.Response(
            503,
            json={"status": "error", "message": "busy", "code": "SERVICE_BUSY", "retry_after": 0},
        )
    )
    with pytest.raises(ProviderCallError) as info:
        await client(handler).send(POST)
    assert info.value.kind is ErrorKind.BUSY
    assert info.value.not_accepted is True
    assert info.value.retry_after == 0


async def test_empty_quota_pauses_before_the_next_request() -> None:
    handler, _ = scripted(
        httpx.Response(
            200,
            headers={"RateLimit-Remaining": "0", "RateLimit-Reset": "0.04"},
            json={"status": "active"},
        )
    )
    c = client(handler)
    await c.send(GET)
    assert c.gate.paused_until > c.gate.clock.now()


async def test_download_sends_the_key_only_to_the_api_host(tmp_path: Path) -> None:
    handler, seen = scripted(httpx.Response(200, content=b"{}" * 10))
    c = client(handler)
    n = await c.download(f"{BASE}/large/1", tmp_path / "a.json", send_key=True)
    await c.download("https://s3.example.test/b?sig=1", tmp_path / "b.json", send_key=True)
    await c.download(f"{BASE}/large/2", tmp_path / "c.json", send_key=False)
    assert n == 20
    assert (tmp_path / "a.json").read_bytes() == b"{}" * 10
    assert seen[0].headers.get("authorization") == f"Bearer {KEY}"
    assert "authorization" not in seen[1].headers
    assert "authorization" not in seen[2].headers


async def test_an_absolute_request_off_the_api_host_carries_no_key() -> None:
    handler, seen = scripted(httpx.Response(200, json={}))
    c = client(handler, adapter=PULSE)
    await c.send(Request("GET", "https://storage.example.test/r?sig=s3cr3t", "download"))
    await c.send(Request("GET", f"{BASE}/job/1", "status"))
    assert "x-api-key" not in seen[0].headers
    assert seen[1].headers["x-api-key"] == KEY


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_key_bearing_download_redirected_off_the_api_leaves_the_key_behind(
    tmp_path: Path, status: int
) -> None:
    # Pulse's large result: fetched with x-api-key from the API, which may answer with a
    # redirect to storage. httpx and aiohttp strip only `Authorization` on such a hop.
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "api.example.test":
            return httpx.Response(status, headers={"location": "https://s3.example.test/r?s=1"})
        return httpx.Response(200, content=b"payload")

    c = client(handler, adapter=PULSE)
    size = await c.download(f"{BASE}/large_results/1", tmp_path / "r.json", send_key=True)
    assert size == 7
    assert (tmp_path / "r.json").read_bytes() == b"payload"
    assert [str(r.url) for r in seen] == [
        f"{BASE}/large_results/1",
        "https://s3.example.test/r?s=1",
    ]
    assert seen[0].headers["x-api-key"] == KEY
    assert "x-api-key" not in seen[1].headers


async def test_a_redirect_that_stays_on_the_api_keeps_the_key_and_loops_are_bounded(
    tmp_path: Path,
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"location": f"/api/hop/{len(seen)}"})

    c = client(handler, adapter=PULSE)
    with pytest.raises(ProviderCallError) as info:
        await c.download(f"{BASE}/large_results/1", tmp_path / "r.json", send_key=True)
    assert len(seen) == 6  # the first request and five hops, then it gives up
    assert all(r.headers["x-api-key"] == KEY for r in seen)
    assert str(seen[1].url) == "https://api.example.test/api/hop/1"
    assert info.value.status_code == 302
    assert list(tmp_path.iterdir()) == []


async def test_an_error_body_echoing_the_key_is_redacted_from_the_message() -> None:
    handler, _ = scripted(httpx.Response(401, json={"message": f"bad key {KEY}"}))
    with pytest.raises(ProviderCallError) as info:
        await client(handler).send(GET)
    assert str(info.value) == "spidra job job-1: GET /scrape/abc: HTTP 401: bad key ***"


async def test_download_410_is_gone_and_leaves_no_file(tmp_path: Path) -> None:
    handler, seen = scripted(httpx.Response(410, json={"detail": "gone"}))
    with pytest.raises(ProviderCallError) as info:
        await client(handler).download(f"{BASE}/large/1", tmp_path / "r.json", send_key=True)
    assert info.value.kind is ErrorKind.GONE
    assert len(seen) == 1
    assert list(tmp_path.iterdir()) == []


async def test_download_over_the_size_cap_fails_and_leaves_no_file(tmp_path: Path) -> None:
    handler, _ = scripted(httpx.Response(200, content=b"x" * 5000))
    with pytest.raises(ProviderCallError, match="larger than the 1000-byte cap"):
        await client(handler).download(
            f"{BASE}/f", tmp_path / "r.bin", send_key=False, max_bytes=1000
        )
    assert list(tmp_path.iterdir()) == []


async def test_download_retries_a_dropped_connection(tmp_path: Path) -> None:
    handler, seen = scripted(
        httpx.ReadError("connection reset"), httpx.Response(200, content=b"ok")
    )
    assert await client(handler).download(f"{BASE}/f", tmp_path / "f", send_key=False) == 2
    assert len(seen) == 2


# -- the transport over real sockets: was the request sent before the connection died? ------


async def hang_up_after_reading() -> tuple[str, asyncio.Server]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()  # the request arrived; no response ever comes

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}/scrape", server


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/scrape"  # nothing listens there any more


async def test_a_connection_dropped_after_sending_counts_as_sent() -> None:
    url, server = await hang_up_after_reading()
    transport = make_transport(1)
    try:
        with pytest.raises(TransportError) as info:
            await transport.request("POST", url, headers={}, json={"a": 1})
        assert info.value.sent is True
    finally:
        await transport.aclose()
        server.close()


async def test_a_refused_connection_counts_as_not_sent() -> None:
    transport = make_transport(1)
    try:
        with pytest.raises(TransportError) as info:
            await transport.request("POST", refused_url(), headers={}, json={"a": 1})
        assert info.value.sent is False
        assert info.value.reason == "connection refused"
    finally:
        await transport.aclose()


async def test_an_unknown_host_is_named_as_such() -> None:
    transport = make_transport(1)
    try:
        with pytest.raises(TransportError) as info:
            await transport.request("GET", "http://no-such-host.invalid/x", headers={})
        assert (info.value.sent, info.value.reason) == (False, "host not found")
    finally:
        await transport.aclose()


# -- outages: the gate hears every answer; one try while the provider is down --------------


async def test_every_http_answer_tells_the_gate_the_provider_is_reachable() -> None:
    handler, _ = scripted(httpx.Response(404, json={"error": "no"}))
    c = client(handler)
    assert c.gate.outage.answered is False
    with pytest.raises(ProviderCallError):
        await c.send(GET)
    assert c.gate.outage.answered is True


async def test_a_get_is_tried_once_while_its_provider_is_down() -> None:
    handler, seen = scripted(httpx.ConnectError("refused"))
    c = client(handler)
    c.gate.outage.failed(c.gate.clock.now(), "connection refused", probe=False)
    with pytest.raises(ProviderCallError) as info:
        await c.send(GET)
    assert len(seen) == 1  # not the 3 tries of the retry policy
    assert info.value.not_accepted
    assert info.value.network == "could not connect"


async def test_an_answer_below_500_ends_an_outage_and_says_how_long_it_lasted() -> None:
    handler, _ = scripted(httpx.Response(503), httpx.Response(200, json={"status": "waiting"}))
    c = client(handler)
    lasted: list[float] = []
    c.gate.on_reachable = lasted.append
    c.gate.outage.failed(c.gate.clock.now(), "connection reset", probe=False)
    with pytest.raises(ProviderCallError):
        await c.send(GET)  # a 5xx is an answer, but not a working provider
    assert c.gate.outage.down
    assert lasted == []
    await c.send(GET)
    assert c.gate.outage.down_since is None
    assert len(lasted) == 1
    assert lasted[0] >= 0


async def test_the_probe_is_one_get_of_the_base_url_without_the_key() -> None:
    handler, seen = scripted(httpx.Response(404), httpx.ConnectError("refused"))
    c = client(handler)
    assert await c.probe() is None  # any answer below 500: reachable
    assert await c.probe() == "could not connect"
    assert [(r.method, str(r.url)) for r in seen] == [("GET", BASE), ("GET", BASE)]
    assert all(KEY not in str(r.headers) for r in seen)


async def test_the_transport_leaves_the_key_behind_on_a_redirect_to_storage(tmp_path: Path) -> None:
    heads: list[bytes] = []

    async def storage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    store = await asyncio.start_server(storage, "127.0.0.1", 0)
    target = f"http://127.0.0.1:{store.sockets[0].getsockname()[1]}/bucket/r?sig=1"

    async def api(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(
            f"HTTP/1.1 302 Found\r\nlocation: {target}\r\ncontent-length: 0\r\n"
            "connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(api, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    c = ProviderClient(
        provider="pulse",
        base_url=base,
        api_key=KEY,
        adapter=PULSE,
        gate=Gate("pulse", Limits(), pool_size=2),
        transport=make_transport(2),
    )
    try:
        assert await c.download(f"{base}/large_results/1", tmp_path / "r", send_key=True) == 2
    finally:
        await c.transport.aclose()
        server.close()
        store.close()
    assert len(heads) == 2
    assert f"x-api-key: {KEY}".encode() in heads[0].lower()
    assert KEY.encode() not in heads[1]


# -- hostile replies over real sockets: deadlines and size caps on the transport -----------

MIB = 1024 * 1024
ONE_JOB = {"status": "processing"}


async def hostile_client(
    route: hostile.Route, *, pool: int = 2, **bounds: Any
) -> tuple[ProviderClient, hostile.Hostile]:
    server = hostile.Hostile(route)
    origin = await server.start()
    transport = make_transport(pool, bounds=Bounds(**bounds))
    c = ProviderClient(
        provider="pulse",
        base_url=origin,
        api_key=KEY,
        adapter=PULSE,
        gate=Gate("pulse", Limits(), pool_size=pool),
        transport=transport,
        retry=RetryPolicy(attempts=2, base=0.001, cap=0.002),
    ).for_job("job-1")
    return c, server


@asynccontextmanager
async def hostile_api(
    route: hostile.Route, **options: Any
) -> AsyncIterator[tuple[ProviderClient, hostile.Hostile]]:
    c, server = await hostile_client(route, **options)
    try:
        yield c, server
    finally:
        await c.transport.aclose()
        await server.close()


STATUS = Request("GET", "/job/1", "status")
SUBMIT = Request("POST", "/extract", "submit", json={"file_url": "https://x.test/a.pdf"})


async def test_an_api_reply_past_the_cap_fails_once_without_being_read_whole() -> None:
    # 64 MiB streamed by the server, no Content-Length shortcut: the body is counted.
    async with hostile_api(lambda seen: hostile.huge(64 * MIB)) as (c, server):
        with pytest.raises(ProviderCallError) as info:
            await c.send(STATUS)
    assert str(info.value) == (
        "pulse job job-1: GET /job/1: the reply is larger than the 16 MiB cap"
    )
    assert info.value.kind is ErrorKind.OTHER  # not retried: the same reply would come again
    assert len(server.seen) == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compression_bomb_is_capped_by_its_inflated_size(encoding: str) -> None:
    route = lambda seen: hostile.bomb(encoding, 64 * MIB)  # noqa: E731
    async with hostile_api(route, max_reply_bytes=4 * MIB) as (c, server):
        with pytest.raises(ProviderCallError, match="larger than the 4 MiB cap"):
            await c.send(STATUS)
    assert len(server.seen) == 1
    assert server.seen[0].headers["accept-encoding"] == "gzip, deflate"


@pytest.mark.parametrize("wbits", [31, 15, -15], ids=["gzip", "deflate", "raw-deflate"])
async def test_an_honest_compressed_reply_is_decoded(wbits: int) -> None:
    z = zlib.compressobj(6, zlib.DEFLATED, wbits)
    data = z.compress(b'{"status": "processing"}') + z.flush()
    encoding = "gzip" if wbits == 31 else "deflate"
    route = lambda seen: hostile.body(data, headers={"content-encoding": encoding})  # noqa: E731
    async with hostile_api(route) as (c, _):
        assert (await c.send(STATUS)).json() == ONE_JOB


async def test_an_error_reply_keeps_only_the_start_of_a_huge_body() -> None:
    async with hostile_api(lambda seen: hostile.huge(64 * MIB, status=500)) as (c, server):
        with pytest.raises(ProviderCallError) as info:
            await c.send(STATUS)
    assert info.value.kind is ErrorKind.TRANSIENT  # judged by its status, as any 500
    assert info.value.status_code == 500
    assert len(server.seen) == 2  # retried like any 500 (attempts=2)


async def test_a_dripping_reply_ends_at_the_request_deadline_and_counts_as_sent() -> None:
    # The read timeout (30 s) never trips: a byte arrives every 0.2 s.
    route = lambda seen: hostile.drip(b'{"job_id": "1"}' * 10, interval=0.2)  # noqa: E731
    async with hostile_api(route, deadline=0.5) as (c, server):
        started = anyio.current_time()
        with anyio.fail_after(5), pytest.raises(ProviderCallError) as info:
            await c.send(SUBMIT)
    assert anyio.current_time() - started < 2
    assert str(info.value) == "pulse job job-1: POST /extract: no complete reply within 0.5s"
    assert info.value.kind is ErrorKind.TRANSIENT
    assert info.value.not_accepted is False  # sent: the provider may have accepted it
    assert len(server.seen) == 1


async def test_a_stuck_request_gives_its_gate_slot_back_at_the_deadline() -> None:
    def route(seen: hostile.Seen) -> hostile.Handler:
        if seen.path == "/job/stuck":
            return hostile.drip(b" " * 1000, interval=1.0)
        return hostile.json(ONE_JOB)

    async with hostile_api(route, pool=1, deadline=0.5) as (c, _):
        outcome: list[BaseException] = []

        async def stuck() -> None:
            try:
                await c.send(Request("POST", "/job/stuck", "status"))
            except ProviderCallError as exc:
                outcome.append(exc)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(stuck)
                await anyio.sleep(0.05)  # the stuck request holds the only slot
                assert (await c.send(STATUS)).json() == ONE_JOB
    assert "no complete reply within 0.5s" in str(outcome[0])


async def test_a_reply_cut_short_counts_as_sent_and_says_so() -> None:
    route = lambda seen: hostile.truncated(b'{"job_id"', declared=1000)  # noqa: E731
    async with hostile_api(route) as (c, _):
        with pytest.raises(ProviderCallError) as info:
            await c.send(SUBMIT)
    # how much of the 9 bytes a library hands over before it notices is its own business
    assert re.match(
        r"pulse job job-1: POST /extract: the reply was cut short after [0-9] bytes \(\w+\)$",
        str(info.value),
    )
    assert info.value.not_accepted is False


async def test_an_api_redirect_is_not_followed_and_says_so() -> None:
    async with hostile_api(lambda seen: hostile.redirect(seen.path)) as (c, server):
        with pytest.raises(ProviderCallError) as info:
            await c.send(STATUS)
    assert str(info.value) == (
        "pulse job job-1: GET /job/1: HTTP 302: redirected to /job/1; "
        "runner does not follow redirects of API requests"
    )
    assert len(server.seen) == 1


@pytest.mark.parametrize("send_key", [True, False], ids=["api", "offsite"])
async def test_a_download_redirect_loop_ends_and_says_redirect(
    send_key: bool, tmp_path: Path
) -> None:
    def route(seen: hostile.Seen) -> hostile.Handler:
        return hostile.redirect(f"/loop/{int(seen.path.rsplit('/', 1)[1]) + 1}")

    async with hostile_api(route) as (c, server):
        with pytest.raises(ProviderCallError) as info:
            await c.download(f"{c.base_url}/loop/0", tmp_path / "r", send_key=send_key)
    assert str(info.value) == (
        "pulse job job-1: GET /loop/5: HTTP 302: too many redirects (more than 5; "
        "a redirect loop?), last to /loop/6"
    )
    assert info.value.kind is ErrorKind.OTHER
    assert len(server.seen) == 6
    assert list(tmp_path.iterdir()) == []


async def test_a_download_counts_inflated_bytes_against_its_cap(tmp_path: Path) -> None:
    async with hostile_api(lambda seen: hostile.bomb("gzip", 64 * MIB)) as (c, _):
        with pytest.raises(ProviderCallError, match="larger than the 1048576-byte cap"):
            await c.download(f"{c.base_url}/r", tmp_path / "r", send_key=True, max_bytes=MIB)
    assert list(tmp_path.iterdir()) == []


async def test_a_dripping_download_ends_at_its_deadline(tmp_path: Path) -> None:
    route = lambda seen: hostile.drip(b"x" * 100, interval=0.2)  # noqa: E731
    async with hostile_api(route, download_deadline=0.5) as (c, server):
        with anyio.fail_after(5), pytest.raises(ProviderCallError) as info:
            await c.download(f"{c.base_url}/r", tmp_path / "r", send_key=True)
    assert str(info.value) == "pulse job job-1: GET /r: no complete reply within 0.5s"
    assert len(server.seen) == 2  # a GET: retried once (attempts=2), then given up
    assert list(tmp_path.iterdir()) == []
