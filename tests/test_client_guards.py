"""What runner.http.client promises in its corners, found unguarded by the mutation run
(make mutate): how aiohttp's failures read (sent or not, and why), how a provider's and a
storage host's error replies are judged (kind, hint, the provider-wide pause), the probe,
and the Content-Encoding decoder's edge cases. In process, no sockets."""

from __future__ import annotations

import random
import re
import threading
import zlib
from collections.abc import AsyncIterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from runner.errors import (
    ErrorKind,
    ProviderCallError,
    ReplyError,
    StoreError,
    TooLargeError,
    TransportError,
)
from runner.http.client import (
    CHUNK,
    HttpxTransport,
    ProviderClient,
    _Inflater,
    _read_reply,
    _size,
    _stream_to,
    _translate_aiohttp,
    network_reason,
)
from runner.http.limits import Gate
from runner.plan import Limits, Rate
from runner.providers.base import ApiError, Reply
from runner.providers.spidra import INFO

pytestmark = pytest.mark.anyio

BASE = "https://api.example.test/api"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- aiohttp's failures ----------------------------------------------------------------------


def _caused(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("cause", "message", "sent", "reason"),
    [
        (
            aiohttp.ConnectionTimeoutError("slow"),
            "could not connect (ConnectionTimeoutError: slow)",
            False,
            "timed out",
        ),
        (
            _caused(aiohttp.ClientConnectionError("refused"), ConnectionRefusedError()),
            "connection lost or timed out (ClientConnectionError: refused)",
            True,
            "connection refused",
        ),
        (TimeoutError("read"), "timed out (TimeoutError: read)", True, "timed out"),
        (
            aiohttp.ServerDisconnectedError(),
            "connection lost or timed out (ServerDisconnectedError: Server disconnected)",
            True,
            "connection closed",
        ),
        (
            _caused(aiohttp.ServerDisconnectedError(), ConnectionResetError()),
            "connection lost or timed out (ServerDisconnectedError: Server disconnected)",
            True,
            "connection reset",
        ),
    ],
    ids=["connect-timeout", "lost-refused", "read-timeout", "disconnected", "reset"],
)
def test_an_aiohttp_failure_reads_as_sent_or_not_and_why(
    cause: BaseException, message: str, sent: bool, reason: str
) -> None:
    translated = _translate_aiohttp(cause, "ConnectTimeout")
    assert isinstance(translated, TransportError)
    assert (str(translated), translated.sent, translated.reason) == (message, sent, reason)


def test_an_aiohttp_connector_error_never_sent_anything() -> None:
    class Key:
        host, port, ssl = "api.example.test", 443, True

    cause = aiohttp.ClientConnectorError(Key(), ConnectionRefusedError(111, "refused"))  # type: ignore[arg-type]
    translated = _translate_aiohttp(cause, "ConnectTimeout")
    assert isinstance(translated, TransportError)
    assert str(translated).startswith("could not connect (ClientConnectorError: ")
    assert (translated.sent, translated.reason) == (False, "connection refused")


def test_anything_else_is_left_to_the_caller() -> None:
    assert _translate_aiohttp(ValueError("x"), "ConnectTimeout") is None


# -- error replies ---------------------------------------------------------------------------


class Fixed:
    """An adapter whose every error reply classifies as `api`."""

    info = INFO

    def __init__(self, api: ApiError) -> None:
        self.api = api

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"}

    def classify_error(self, reply: Reply) -> ApiError:
        return self.api


class Recorder:
    """A transport that answers `reply` and records what it was asked."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.calls: list[tuple[str, str, Any]] = []

    async def request(self, method: str, url: str, **kw: Any) -> Reply:
        self.calls.append((method, url, kw))
        return self.reply

    async def download(self, *a: Any, **kw: Any) -> Any:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        pass


class StillClock:
    """The gate's clock, at 100 s until slept past (sleeping moves it at once)."""

    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


def make(
    api: ApiError | None = None, *, reply: Reply | None = None, limits: Limits | None = None
) -> tuple[ProviderClient, list[tuple[float, str]]]:
    gate = Gate("spidra", limits or Limits(), pool_size=2, clock=StillClock())
    paused: list[tuple[float, str]] = []
    gate.on_pause = lambda seconds, reason: paused.append((seconds, reason))
    client = ProviderClient(
        provider="spidra",
        base_url=BASE,
        api_key="sk-secret",
        adapter=Fixed(api or ApiError(ErrorKind.OTHER, "x")),  # type: ignore[arg-type]
        gate=gate,
        transport=Recorder(reply or Reply(404, {}, b"")),
        rng=random.Random(0),
    ).for_job("j1")
    return client, paused


def test_a_429_pauses_the_provider_for_its_hint_and_names_code_and_message() -> None:
    limits = Limits(endpoints={"status": Rate(10, 1)})
    client, paused = make(ApiError(ErrorKind.OTHER, "slow down", code="RATE"), limits=limits)
    error = client._judge("GET /s", Reply(429, {"retry-after": "7"}, b""), "status", 0.0)
    assert str(error) == "spidra job j1: GET /s: HTTP 429 RATE: slow down"
    assert (error.kind, error.status_code, error.code, error.retry_after) == (
        ErrorKind.OTHER,
        429,
        "RATE",
        7.0,
    )
    assert not error.not_accepted
    assert paused == [(7.0, "GET /s: HTTP 429 RATE")]
    assert client.gate.endpoints["status"].aimd.decreases == 1  # the endpoint's own rate


def test_a_429_waits_for_the_quota_reset_even_with_quota_left() -> None:
    client, paused = make(ApiError(ErrorKind.RATE_LIMITED, "m"))
    headers = {"ratelimit-remaining": "5", "ratelimit-reset": "9"}
    error = client._judge("GET /s", Reply(429, headers, b""), "status", 0.0)
    assert error.retry_after == 9.0
    assert error.not_accepted
    assert paused == [(9.0, "GET /s: HTTP 429")]


def test_a_retry_after_date_is_read_against_our_clock_without_a_date_header() -> None:
    import time

    client, _ = make(ApiError(ErrorKind.RATE_LIMITED, "m"))
    when = formatdate(time.time() + 120, usegmt=True)
    error = client._judge("GET /s", Reply(429, {"retry-after": when}, b""), "status", 0.0)
    assert error.retry_after is not None
    assert 60 < error.retry_after <= 121


@pytest.mark.parametrize(
    ("status", "api", "headers", "pauses"),
    [
        (503, ApiError(ErrorKind.BUSY, "busy", retry_after=4.0), {}, True),
        (503, ApiError(ErrorKind.BUSY, "busy"), {}, False),  # no hint: the job backs off
        (500, ApiError(ErrorKind.TRANSIENT, "oops", retry_after=4.0), {}, False),
        (200, ApiError(ErrorKind.RATE_LIMITED, "limited"), {}, True),  # by body code
        # a quota left with its reset time is no hint on a reply that is not a 429
        (
            503,
            ApiError(ErrorKind.BUSY, "busy"),
            {"ratelimit-remaining": "5", "ratelimit-reset": "9"},
            False,
        ),
    ],
)
def test_only_a_throttle_or_a_busy_reply_with_a_hint_pauses_the_provider(
    status: int, api: ApiError, headers: dict[str, str], pauses: bool
) -> None:
    client, paused = make(api)
    error = client._judge("POST /x", Reply(status, headers, b""), "submit", 0.0)
    assert bool(paused) is pauses
    assert error.kind is api.kind
    assert error.code is None
    assert str(error) == f"spidra job j1: POST /x: HTTP {status}: {api.message}"


def test_a_redirected_api_request_says_where_to_and_that_it_is_not_followed() -> None:
    client, _ = make()
    for headers, to in (
        ({"location": "https://elsewhere.test/x"}, "https://elsewhere.test/x"),
        ({}, "nowhere"),
    ):
        error = client._redirected("GET /s", Reply(302, headers, b""))
        assert str(error) == (
            f"spidra job j1: GET /s: HTTP 302: redirected to {to}; "
            "runner does not follow redirects of API requests"
        )
        assert (error.kind, error.status_code) == (ErrorKind.OTHER, 302)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, ErrorKind.INVALID),
        (403, ErrorKind.INVALID),
        (404, ErrorKind.NOT_FOUND),
        (410, ErrorKind.GONE),
        (429, ErrorKind.RATE_LIMITED),
        (503, ErrorKind.BUSY),
        (500, ErrorKind.TRANSIENT),
        (501, ErrorKind.TRANSIENT),
        (499, ErrorKind.OTHER),
    ],
)
def test_a_storage_hosts_error_is_judged_by_its_status_alone(status: int, kind: ErrorKind) -> None:
    client, paused = make(ApiError(ErrorKind.AUTH, "never asked"))
    error = client._judge_offsite("GET /f", Reply(status, {}, b""))
    assert (error.kind, error.status_code, error.offsite, error.retry_after) == (
        kind,
        status,
        True,
        None,
    )
    assert str(error) == f"spidra job j1: GET /f: HTTP {status}: no body"
    assert paused == []  # never the provider's pause


def test_a_storage_hosts_429_carries_its_hint_and_quota_reset() -> None:
    client, _ = make()
    error = client._judge_offsite("GET /f", Reply(429, {"retry-after": "3"}, b"slow"))
    assert (error.retry_after, str(error)) == (3.0, "spidra job j1: GET /f: HTTP 429: slow")
    reset = {"ratelimit-remaining": "5", "ratelimit-reset": "8"}
    assert client._judge_offsite("GET /f", Reply(429, reset, b"")).retry_after == 8.0
    assert client._judge_offsite("GET /f", Reply(503, reset, b"")).retry_after is None


# -- the probe -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "why"), [(404, None), (499, None), (500, "HTTP 500"), (501, "HTTP 501")]
)
async def test_the_probe_is_a_keyless_get_counted_as_a_status_request(
    status: int, why: str | None
) -> None:
    limits = Limits(endpoints={"status": Rate(1000, 1, burst=1000)})
    client, _ = make(reply=Reply(status, {}, b""), limits=limits)
    pacer = client.gate.endpoints["status"].pacer
    assert await client.probe() == why
    assert client.transport.calls == [("GET", BASE, {"headers": {}})]  # type: ignore[attr-defined]
    assert pacer.released == 1  # the status budget paid for it


# -- Content-Encoding ------------------------------------------------------------------------


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def decode(encoding: str, *parts: bytes) -> bytes:
    return await _read_reply(200, {}, _chunks(*parts), encoding, 1 << 24)


def _gzip(data: bytes) -> bytes:
    z = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    return z.compress(data) + z.flush()


async def test_x_gzip_is_gzip() -> None:
    assert await decode("x-gzip", _gzip(b"hello")) == b"hello"


async def test_an_unknown_encoding_is_named() -> None:
    with pytest.raises(ReplyError, match=r"^the reply has an unsupported Content-Encoding 'br'$"):
        await decode("br", b"x")


async def test_a_zlib_stream_sent_as_gzip_is_corrupt_and_says_which_encoding() -> None:
    with pytest.raises(ReplyError, match=r"^the reply's gzip encoding is corrupt \("):
        await decode("gzip", zlib.compress(b"hello"))


async def test_raw_deflate_is_told_from_zlib_wrapped_deflate_by_its_header() -> None:
    # A raw stream whose first byte looks like a zlib method byte (a stored block with a
    # padding bit set) but whose two first bytes are no zlib header.
    raw = b"\x08\x05\x00\xfa\xffhello" + b"\x01\x00\x00\xff\xff"
    assert await decode("deflate", raw) == b"hello"
    assert await decode("deflate", zlib.compress(b"hello")) == b"hello"


async def test_deflate_arriving_a_byte_at_a_time_is_decoded_whole() -> None:
    body = zlib.compress(b"hello world")
    assert await decode("deflate", *(body[i : i + 1] for i in range(len(body)))) == b"hello world"


async def test_a_two_byte_deflate_body_is_still_decoded() -> None:
    with pytest.raises(ReplyError, match="deflate encoding is corrupt"):
        await decode("deflate", b"\xff\xff")
    assert await decode("deflate") == b""  # empty: nothing to decode, nothing pending


def test_an_inflater_gives_at_most_one_chunk_per_step() -> None:
    inflater = _Inflater("gzip")
    pieces = list(inflater.feed(_gzip(bytes(4 * CHUNK))))
    assert [len(p) for p in pieces] == [CHUNK] * 4


async def test_a_truncated_stream_gives_what_it_holds() -> None:
    body = _gzip(bytes(range(256)) * 64)[:-12]  # no trailer, and the last block cut
    expected = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body)
    assert await decode("gzip", body) == expected


# -- httpx's failures ------------------------------------------------------------------------


def _httpx(exc: Exception, cause: BaseException | None = None) -> Exception:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "message", "sent", "reason"),
    [
        (
            httpx.ConnectTimeout("slow"),
            "could not connect (ConnectTimeout: slow)",
            False,
            "timed out",
        ),
        (
            _httpx(httpx.ConnectError("no"), ConnectionRefusedError()),
            "could not connect (ConnectError: no)",
            False,
            "connection refused",
        ),
        (httpx.PoolTimeout("full"), "no free connection (PoolTimeout)", False, "timed out"),
        (httpx.ReadTimeout("slow"), "timed out after sending (ReadTimeout)", True, "timed out"),
        (
            _httpx(httpx.RemoteProtocolError("gone"), ConnectionResetError()),
            "connection lost (RemoteProtocolError: gone)",
            True,
            "connection reset",
        ),
    ],
    ids=["connect-timeout", "refused", "pool", "read-timeout", "reset"],
)
def test_an_httpx_failure_reads_as_sent_or_not_and_why(
    exc: Exception, message: str, sent: bool, reason: str
) -> None:
    translated = HttpxTransport(None)._translate(exc)
    assert isinstance(translated, TransportError)
    assert (str(translated), translated.sent, translated.reason) == (message, sent, reason)


def test_only_the_aiohttp_transport_judges_by_aiohttps_cause() -> None:
    refused = _httpx(httpx.ConnectTimeout("x"), aiohttp.ServerDisconnectedError())
    over_aiohttp = HttpxTransport(None, aiohttp=True)._translate(refused)
    assert isinstance(over_aiohttp, TransportError)
    assert (over_aiohttp.sent, over_aiohttp.reason) == (True, "connection closed")
    other = HttpxTransport(None)._translate(refused)
    assert isinstance(other, TransportError)
    assert (other.sent, other.reason) == (False, "timed out")
    assert HttpxTransport(None)._translate(ValueError("x")).__class__ is ValueError


# -- network_reason --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (ConnectionResetError(), "connection reset"),
        (BrokenPipeError(), "connection reset"),
        (ConnectionAbortedError(), "connection reset"),
        (TimeoutError(), "timed out"),
    ],
)
def test_the_os_cause_is_found_behind_a_wrapper(cause: BaseException, reason: str) -> None:
    wrapper = RuntimeError("wrapped")
    wrapper.__cause__ = cause  # and no __context__: the chain goes on past a None
    assert network_reason(wrapper) == reason


def test_a_connector_errors_os_error_is_read() -> None:
    class Connector(Exception):
        os_error = ConnectionRefusedError()

    assert network_reason(Connector()) == "connection refused"


def test_a_cycle_in_the_chain_of_causes_ends() -> None:
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a
    found: list[str | None] = []
    worker = threading.Thread(target=lambda: found.append(network_reason(a)), daemon=True)
    worker.start()
    worker.join(10.0)
    assert found == [None]


# -- writing a download ----------------------------------------------------------------------


async def test_a_download_may_be_exactly_its_cap(tmp_path: Path) -> None:
    dest = tmp_path / "f"
    assert await _stream_to(dest, _chunks(b"12", b"345"), None, 5) == 5
    assert dest.read_bytes() == b"12345"
    with pytest.raises(TooLargeError, match="larger than the 4-byte cap"):
        await _stream_to(dest, _chunks(b"12", b"345"), None, 4)


async def test_a_download_that_cannot_be_opened_names_the_file(tmp_path: Path) -> None:
    dest = tmp_path / "missing" / "f"
    with pytest.raises(StoreError, match=f"^cannot write {re.escape(str(dest))}: No such file"):
        await _stream_to(dest, _chunks(b"x"), None, None)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("size", [10, 1 << 20], ids=["on-flush", "on-write"])
async def test_a_full_disk_is_our_disk_not_the_network(size: int) -> None:
    with pytest.raises(StoreError, match=r"^cannot write /dev/full: No space left on device"):
        await _stream_to(Path("/dev/full"), _chunks(bytes(size)), None, None)


# -- downloads -------------------------------------------------------------------------------


def _over(handler: Any, **kw: Any) -> HttpxTransport:
    return HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler)), **kw)


async def test_a_transport_download_streams_a_2xx_and_returns_the_error_body_otherwise(
    tmp_path: Path,
) -> None:
    seen: list[str] = []
    answers = {
        "/ok": httpx.Response(200, headers={"x-a": "1"}, stream=httpx.ByteStream(b"data")),
        "/moved": httpx.Response(300, headers={"location": "/x"}, stream=httpx.ByteStream(b"m")),
        "/err": httpx.Response(
            404, headers={"content-encoding": "gzip"}, stream=httpx.ByteStream(_gzip(b"nope"))
        ),
    }

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        return answers[request.url.path]

    transport = _over(handler)
    reply, written = await transport.download(
        "http://h.test/ok", tmp_path / "ok", headers={}, max_bytes=None
    )
    assert (reply.status_code, reply.headers.get("x-a"), reply.body, written) == (200, "1", b"", 4)
    assert (tmp_path / "ok").read_bytes() == b"data"
    reply, written = await transport.download(
        "http://h.test/moved", tmp_path / "moved", headers={}, max_bytes=None
    )
    assert (reply.status_code, reply.body, written) == (300, b"m", 0)
    assert not (tmp_path / "moved").exists()
    reply, written = await transport.download(
        "http://h.test/err", tmp_path / "err", headers={}, max_bytes=None
    )
    assert (reply.status_code, reply.body, written) == (404, b"nope", 0)  # decoded
    assert seen == ["GET"] * 3


def _downloader(tmp_path: Path, body: bytes, **kw: Any) -> ProviderClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=httpx.ByteStream(body))

    client, _ = make()
    return ProviderClient(
        provider="spidra",
        base_url=BASE,
        api_key="sk-secret",
        adapter=client.adapter,
        gate=client.gate,
        transport=_over(handler),
        **kw,
    )


async def test_a_download_makes_its_directories_and_keeps_to_the_clients_cap(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "a" / "b" / "f"
    client = _downloader(tmp_path, b"0123456789", max_download_bytes=10)
    assert await client.download(f"{BASE}/r", dest, send_key=True) == 10
    assert dest.read_bytes() == b"0123456789"
    small = _downloader(tmp_path, b"0123456789", max_download_bytes=4)
    with pytest.raises(
        ProviderCallError, match=r"^spidra: GET /api/r: larger than the 4-byte cap"
    ) as caught:
        await small.download(f"{BASE}/r", tmp_path / "g", send_key=True)
    assert caught.value.kind is ErrorKind.INVALID
    assert await small.download(f"{BASE}/r", tmp_path / "h", send_key=True, max_bytes=10) == 10


async def test_a_download_whose_encoding_is_corrupt_says_so_and_what(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"content-encoding": "gzip"}, stream=httpx.ByteStream(b"not gzip")
        )

    client = _downloader(tmp_path, b"")
    client.transport = _over(handler)
    with pytest.raises(
        ProviderCallError, match=r"^spidra: GET /api/r: the reply's gzip encoding is corrupt"
    ) as caught:
        await client.download(f"{BASE}/r", tmp_path / "f", send_key=True)
    assert caught.value.kind is ErrorKind.OTHER


async def test_an_api_download_waiting_while_the_key_was_refused_is_not_sent(
    tmp_path: Path,
) -> None:
    client = _downloader(tmp_path, b"x")
    client.gate.stopped = "the key was refused"
    with pytest.raises(
        ProviderCallError, match=r"^spidra: GET /api/r: the key was refused$"
    ) as caught:
        await client.download(f"{BASE}/r", tmp_path / "f", send_key=True)
    assert (caught.value.kind, caught.value.not_accepted) == (ErrorKind.AUTH, True)


class Dropping(Recorder):
    async def download(self, *a: Any, **kw: Any) -> Any:
        raise TransportError("connection lost", sent=True, reason="connection reset")


@pytest.mark.parametrize(("url", "offsite"), [(f"{BASE}/r", False), ("https://cdn.test/r", True)])
async def test_a_dropped_download_says_whether_it_was_the_providers(
    tmp_path: Path, url: str, offsite: bool
) -> None:
    from runner.http.backoff import RetryPolicy

    client = _downloader(tmp_path, b"", retry=RetryPolicy(attempts=1, base=0.001, cap=0.002))
    client.transport = Dropping(Reply(200, {}, b""))
    with pytest.raises(ProviderCallError) as caught:
        await client.download(url, tmp_path / "f", send_key=True)
    assert (caught.value.kind, caught.value.offsite) == (ErrorKind.TRANSIENT, offsite)
    assert caught.value.network == "connection reset"


# -- reading a reply -------------------------------------------------------------------------


async def _never(*parts: bytes) -> AsyncIterator[bytes]:
    """`parts`, then a failure: a body that must not be read past them."""
    for part in parts:
        yield part
    raise AssertionError("read past what was needed")


async def test_a_declared_length_past_the_cap_fails_before_reading() -> None:
    with pytest.raises(TooLargeError, match=r"^the reply is larger than the 10-byte cap$"):
        await _read_reply(200, {"content-length": "11"}, _never(), None, 10)


async def test_a_reply_may_be_exactly_its_cap() -> None:
    body = b"0123456789"
    assert await _read_reply(200, {"content-length": "10"}, _chunks(body), None, 10) == body
    assert await _read_reply(200, {}, _chunks(body[:4], body[4:]), None, 10) == body


async def test_an_error_body_is_read_only_up_to_its_limit() -> None:
    assert await _read_reply(500, {}, _never(b"0123456789AB"), None, 10) == b"0123456789"
    # a 3xx is no success either: its body is an error body, cut, never "too large"
    assert await _read_reply(300, {}, _chunks(b"0123456789AB"), None, 10) == b"0123456789"


async def test_a_success_may_exceed_the_error_body_limit_up_to_its_cap() -> None:
    from runner.http.client import ERROR_BODY_LIMIT

    big = bytes(ERROR_BODY_LIMIT + 100)
    assert await _read_reply(200, {}, _chunks(big), None, 1 << 20) == big
    assert await _read_reply(404, {}, _chunks(big), None, 1 << 20) == big[:ERROR_BODY_LIMIT]


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (1 << 30, "1 GiB"),
        (2 << 30, "2 GiB"),
        (3 << 20, "3 MiB"),
        (1 << 10, "1 KiB"),
        (2048, "2 KiB"),
        (1536, "1536-byte"),
        (100, "100-byte"),
    ],
)
def test_a_cap_is_named_in_the_largest_unit_that_divides_it(n: int, text: str) -> None:
    assert _size(n) == text


# -- a download's answers --------------------------------------------------------------------


class Scripted(Recorder):
    """Download answers in turn: (status, headers) or an exception; a 2xx writes b"ok"."""

    def __init__(self, *answers: Any) -> None:
        super().__init__(Reply(200, {}, b""))
        self.answers = list(answers)
        self.urls: list[str] = []

    async def download(self, url: str, dest: Path, **kw: Any) -> Any:
        self.urls.append(url)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, headers = answer
        if 200 <= status < 300:
            dest.write_bytes(b"ok")
            return Reply(status, headers, b""), 2
        return Reply(status, headers, b"no"), 0


def _scripted(
    *answers: Any, limits: Limits | None = None, api: ApiError | None = None
) -> ProviderClient:
    from runner.http.backoff import RetryPolicy

    client, _ = make(api, limits=limits)
    client.transport = Scripted(*answers)
    client.retry = RetryPolicy(attempts=3, base=0.5, cap=1.0)
    return client


def _urls(client: ProviderClient) -> list[str]:
    return client.transport.urls  # type: ignore[attr-defined, no-any-return]


async def test_an_api_downloads_429_pauses_the_provider_as_a_download(tmp_path: Path) -> None:
    limits = Limits(endpoints={"download": Rate(10, 1)})
    throttled = ApiError(ErrorKind.RATE_LIMITED, "slow down")
    client = _scripted((429, {"retry-after": "2"}), (200, {}), limits=limits, api=throttled)
    assert await client.download(f"{BASE}/r", tmp_path / "f", send_key=True) == 2
    assert client.gate.endpoints["download"].aimd.decreases == 1
    assert client.gate.clock.now() == 102.0  # the pause, and no backoff on top


async def test_an_api_downloads_error_reads_as_the_providers(tmp_path: Path) -> None:
    client = _scripted((400, {}))
    with pytest.raises(ProviderCallError, match=r"^spidra job j1: GET /api/r: HTTP 400: x$") as e:
        await client.download(f"{BASE}/r", tmp_path / "f", send_key=True)
    assert not e.value.offsite


async def test_a_transient_api_download_failure_backs_off_then_tries_again(tmp_path: Path) -> None:
    dropped = TransportError("lost", sent=True, reason="connection reset")
    client = _scripted(dropped, (200, {}))
    assert await client.download(f"{BASE}/r", tmp_path / "f", send_key=True) == 2
    assert client.gate.clock.now() > 100.0


async def test_an_api_download_is_tried_once_while_its_provider_is_down(tmp_path: Path) -> None:
    client = _scripted(TransportError("lost", sent=True, reason="connection reset"), (200, {}))
    client.gate.outage.failed(100.0, "connection refused", probe=False)
    with pytest.raises(ProviderCallError):
        await client.download(f"{BASE}/r", tmp_path / "f", send_key=True)
    assert len(_urls(client)) == 1


@pytest.mark.parametrize(("retry_after", "waited"), [("5", 5.0), ("100", 30.0)])
async def test_a_storage_hosts_429_is_waited_out_up_to_a_bound(
    tmp_path: Path, retry_after: str, waited: float
) -> None:
    client = _scripted((429, {"retry-after": retry_after}), (200, {}))
    assert await client.download("https://cdn.test/r", tmp_path / "f", send_key=True) == 2
    assert client.gate.clock.now() == 100.0 + waited


@pytest.mark.parametrize(
    ("status", "followed"), [(300, True), (301, True), (399, True), (400, False), (404, False)]
)
async def test_only_a_3xx_with_a_location_is_followed(
    tmp_path: Path, status: int, followed: bool
) -> None:
    client = _scripted((status, {"location": "/api/other"}), (200, {}))
    if followed:
        assert await client.download(f"{BASE}/r", tmp_path / "f", send_key=True) == 2
        assert _urls(client) == [f"{BASE}/r", "https://api.example.test/api/other"]
    else:
        with pytest.raises(ProviderCallError):
            await client.download(f"{BASE}/r", tmp_path / "f", send_key=True)
        assert _urls(client) == [f"{BASE}/r"]


async def test_a_300_without_a_location_is_an_error_not_a_file(tmp_path: Path) -> None:
    client = _scripted((300, {}))
    with pytest.raises(ProviderCallError, match="HTTP 300"):
        await client.download(f"{BASE}/r", tmp_path / "f", send_key=True)
    assert not (tmp_path / "f").exists()


# -- what a request carries ------------------------------------------------------------------


async def test_a_json_request_asks_for_json_unless_it_names_its_own_accept() -> None:
    from runner.providers.base import Request

    client, _ = make(reply=Reply(200, {}, b"{}"))
    await client.send(Request("GET", "/a", "status"))
    await client.send(Request("GET", "/b", "status", headers={"accept": "text/csv"}))
    await client.send(Request("GET", "/c", "status", expect="bytes"))
    sent = [kw["headers"] for _, _, kw in client.transport.calls]  # type: ignore[attr-defined]
    auth = {"authorization": "Bearer sk-secret"}
    assert sent == [
        {**auth, "accept": "application/json"},
        {**auth, "accept": "text/csv"},
        auth,
    ]


def test_a_storage_hosts_retry_after_date_is_read_against_our_clock() -> None:
    import time

    client, _ = make()
    when = formatdate(time.time() + 120, usegmt=True)
    error = client._judge_offsite("GET /f", Reply(503, {"retry-after": when}, b""))
    assert error.retry_after is not None
    assert 60 < error.retry_after <= 121


async def test_a_chain_of_encodings_is_undone_in_reverse_and_identity_is_nothing() -> None:
    body = _gzip(zlib.compress(b"twice"))
    assert await decode("deflate, gzip", body) == b"twice"
    assert await decode("identity", b"plain") == b"plain"
    assert await decode("gzip,identity", _gzip(b"once")) == b"once"


async def test_a_reply_cut_short_says_after_how_many_bytes() -> None:
    async def cut() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"de"
        raise ValueError("peer went away")

    with pytest.raises(
        TransportError, match=r"^the reply was cut short after 5 bytes \(ValueError\)$"
    ) as e:
        await _read_reply(200, {}, cut(), None, 100)
    assert e.value.sent


async def test_the_transport_sends_the_query_parameters() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"{}")

    reply = await _over(handler).request("GET", "http://h.test/x", headers={}, params={"q": "1"})
    assert reply.status_code == 200
    assert dict(seen[0].url.params) == {"q": "1"}


async def test_a_request_takes_its_endpoints_budget_and_passes_everything_on() -> None:
    from runner.providers.base import Request

    limits = Limits(endpoints={"submit": Rate(1000, 1, burst=1000)})
    client, _ = make(reply=Reply(200, {}, b"{}"), limits=limits)
    await client.send(Request("POST", "/s", "submit", params={"p": 1}, json={"a": 1}))
    assert client.gate.endpoints["submit"].pacer.released == 1
    ((method, url, kw),) = client.transport.calls  # type: ignore[attr-defined]
    assert (method, url, kw["params"], kw["json"]) == ("POST", f"{BASE}/s", {"p": 1}, {"a": 1})


async def test_a_request_waiting_while_the_key_was_refused_says_what_it_was() -> None:
    from runner.providers.base import Request

    client, _ = make(reply=Reply(200, {}, b"{}"))
    client.gate.stopped = "the key was refused"
    with pytest.raises(ProviderCallError, match=r"^spidra job j1: GET /a: the key was refused$"):
        await client.send(Request("GET", "/a", "status"))
    assert client.transport.calls == []  # type: ignore[attr-defined]


async def test_an_undecodable_reply_keeps_its_cause() -> None:
    from runner.providers.base import Request

    class Undecodable(Recorder):
        async def request(self, method: str, url: str, **kw: Any) -> Reply:
            raise ReplyError("the reply's gzip encoding is corrupt (x)")

    client, _ = make()
    client.transport = Undecodable(Reply(200, {}, b""))
    with pytest.raises(ProviderCallError) as e:
        await client.send(Request("POST", "/s", "submit"))
    assert isinstance(e.value.__cause__, ReplyError)
    assert e.value.kind is ErrorKind.OTHER
    assert not e.value.not_accepted  # an answer came: the POST may have been acted on
    assert not e.value.offsite


@pytest.mark.parametrize(
    ("status", "redirected"), [(299, None), (300, True), (399, True), (400, False)]
)
async def test_only_a_3xx_reply_to_an_api_request_is_a_redirect(
    status: int, redirected: bool | None
) -> None:
    from runner.providers.base import Request

    client, _ = make(reply=Reply(status, {"location": "/elsewhere"}, b"{}"))
    if redirected is None:
        assert (await client.send(Request("GET", "/a", "status"))).status_code == status
        return
    with pytest.raises(ProviderCallError) as e:
        await client.send(Request("GET", "/a", "status"))
    assert ("redirected to /elsewhere" in str(e.value)) is redirected


# -- the product's transport and URLs --------------------------------------------------------


def test_the_products_transport_pools_keeps_alive_and_names_itself() -> None:
    from runner import __version__
    from runner.http.client import make_transport

    transport = make_transport(4)
    inner = transport._client  # type: ignore[attr-defined]
    assert (inner.timeout.read, inner.timeout.connect) == (30.0, 10.0)
    assert inner.headers["user-agent"] == f"runner/{__version__}"
    assert inner.headers["accept-encoding"] == "gzip, deflate"
    limits = inner._transport.limits
    assert (limits.max_connections, limits.max_keepalive_connections) == (4, 4)
    assert limits.keepalive_expiry == 30.0
    assert make_transport(2, timeout=5)._client.timeout.connect == 5  # type: ignore[attr-defined]


def test_urls_join_the_base_with_exactly_one_slash() -> None:
    client, _ = make()
    client.base_url = "https://h.test/X/"
    assert client.url("/Xy") == "https://h.test/X/Xy"
    assert client.url("Xy") == "https://h.test/X/Xy"
    assert client.url("https://cdn.test/f") == "https://cdn.test/f"


def test_the_key_goes_only_under_the_base_path() -> None:
    client, _ = make()
    client.base_url = "https://h.test/X/"
    assert client.is_api_url("https://h.test/X")
    assert client.is_api_url("https://h.test/X/jobs")
    assert not client.is_api_url("https://h.test/Xother")
    assert not client.is_api_url("https://h.test/other")
    client.base_url = "https://h.test"
    assert client.is_api_url("https://h.test/anything")
    assert not client.is_api_url("http://h.test/anything")


def test_a_job_view_without_notes_starts_with_its_own_empty_notes() -> None:
    client, _ = make()
    view = client.for_job("j2")
    assert view.notes == {}
    view.note("k", 1)
    assert view.notes == {"k": 1}
    assert client.for_job("j3").notes == {}  # not shared with another job's view


async def test_a_quota_reset_given_as_unix_time_is_read_against_our_clock() -> None:
    import time

    from runner.providers.base import Request

    reset = str(int(time.time()) + 120)
    client, paused = make(
        reply=Reply(200, {"ratelimit-remaining": "0", "ratelimit-reset": reset}, b"{}")
    )
    await client.send(Request("GET", "/a", "status"))
    assert len(paused) == 1
    assert 60 < paused[0][0] <= 121


@pytest.mark.parametrize(("failures", "ok"), [(2, True), (3, False)])
async def test_a_redirect_spends_none_of_a_downloads_tries(
    tmp_path: Path, failures: int, ok: bool
) -> None:
    dropped = TransportError("lost", sent=True, reason="connection reset")
    client = _scripted((302, {"location": "/api/other"}), *[dropped] * failures, (200, {}))
    if ok:
        assert await client.download(f"{BASE}/r", tmp_path / "f", send_key=True) == 2
    else:
        with pytest.raises(ProviderCallError):
            await client.download(f"{BASE}/r", tmp_path / "f", send_key=True)
    assert len(_urls(client)) == 1 + min(failures + 1, 3)
