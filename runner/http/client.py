"""The gated, retrying client each adapter sends through, over a swappable transport.

`ProviderClient` implements `ProviderHttp`: every request takes its provider's Gate, 429s
and quota headers feed the Gate back, and failures become one `ProviderCallError` carrying
provider, job id and what the caller should do (`kind`, `not_accepted`). GET/DELETE are
retried here on connection errors, timeouts, 5xx and 429 (bounded); a POST never is: only
the engine may re-send a submit, and only when `not_accepted` proves it safe.
The transport seam (`Transport`) is the only code that knows the HTTP library; httpx
exceptions are translated in `HttpxTransport` and nowhere else.
"""

from __future__ import annotations

import dataclasses
import os
import random
import socket
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

import anyio
import httpx

from runner import __version__
from runner.durations import format_duration
from runner.errors import (
    ErrorKind,
    ProviderCallError,
    ReplyError,
    RunnerError,
    TooLargeError,
    TransportError,
    store_error,
)
from runner.http.backoff import DEFAULT_RETRY, RetryPolicy, retry_delay
from runner.http.limits import Gate
from runner.http.ratelimit_headers import parse_rate_limit, wait_hint
from runner.providers.base import Adapter, ApiError, Reply, Request
from runner.store.jsonio import temp_for
from runner.store.redaction import redact

USER_AGENT = f"runner/{__version__}"
_T = TypeVar("_T")
IDEMPOTENT = frozenset({"GET", "HEAD", "DELETE"})
ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error body kept from a failed download
CHUNK = 64 * 1024
OFFSITE_CONCURRENCY = 4  # out-of-band downloads at once per provider (not its API budget)
MAX_OFFSITE_WAIT = 30.0  # the longest a storage host's Retry-After is honoured
MAX_REDIRECTS = 5  # hops a download follows (by hand, deciding at each hop about the key)
# Every request ends by its deadline however slowly the reply trickles in (the read timeout
# only bounds the gap between two reads), and no API reply is read past its cap, counted
# after decompression: a dripping or endless reply must not hold a provider's request slot
# for ever, nor a huge or compression-bomb reply the process's memory.
MAX_REPLY_BYTES = 16 * 1024 * 1024  # an API reply (JSON); downloads have their own cap
REQUEST_DEADLINE = 60.0  # seconds, a whole API request: connect, send, every byte back
DOWNLOAD_DEADLINE = 600.0  # seconds, a whole download (up to its size cap)
ACCEPT_ENCODING = "gzip, deflate"  # what `_inflate` decodes

# Kinds after which the request provably did not take effect (nothing was created).
_NOT_ACCEPTED = frozenset(
    {ErrorKind.RATE_LIMITED, ErrorKind.BUSY, ErrorKind.AUTH, ErrorKind.CREDITS, ErrorKind.INVALID}
)
_RETRYABLE = frozenset({ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED, ErrorKind.BUSY})
_OFFSITE_KINDS = {
    401: ErrorKind.INVALID,  # a signed URL refused: its signature, not our key
    403: ErrorKind.INVALID,  # expired or bad signature (S3 answers 403)
    404: ErrorKind.NOT_FOUND,
    410: ErrorKind.GONE,
    429: ErrorKind.RATE_LIMITED,
    503: ErrorKind.BUSY,
}


def network_reason(exc: BaseException) -> str | None:
    """A few words for the OS-level cause of a failed connection, found along the chain of
    causes (httpx, httpcore and aiohttp each wrap it), or None."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        cause = todo.pop()
        if cause is None or id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, socket.gaierror):
            return "host not found"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
            return "connection reset"
        if isinstance(cause, TimeoutError):
            return "timed out"
        os_error = getattr(cause, "os_error", None)  # aiohttp's connector errors
        todo.extend([cause.__cause__, cause.__context__])
        if isinstance(os_error, BaseException):
            todo.append(os_error)
    return None


# -- the transport seam -------------------------------------------------------------------------


class Transport(Protocol):
    """One provider's connection pool. Swap it to change the HTTP library."""

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Reply: ...

    async def download(
        self, url: str, dest: Path, *, headers: Mapping[str, str], max_bytes: int | None
    ) -> tuple[Reply, int]:
        """Stream a 2xx body into `dest` (the caller renames it); returns the reply (with an
        empty body on success, the error body otherwise) and the bytes written. Redirects
        are never followed: a 3xx comes back to the caller, who decides at each hop whether
        the key may go along (httpx and aiohttp strip `Authorization` on a hop to another
        host, but not `x-api-key`) and stops a loop."""
        ...

    async def aclose(self) -> None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Bounds:
    """The deadlines and the reply cap a transport enforces on every request."""

    deadline: float = REQUEST_DEADLINE  # an API request, whole
    download_deadline: float = DOWNLOAD_DEADLINE  # a download, whole
    max_reply_bytes: int = MAX_REPLY_BYTES  # an API reply's 2xx body, decoded


async def _within(
    deadline: float, work: Callable[[], Awaitable[_T]], translate: Callable[[Exception], Exception]
) -> _T:
    """`work()` cut off at `deadline` seconds; library errors translated. Past the deadline
    the request counts as sent (a POST may have been accepted)."""
    with anyio.move_on_after(deadline) as scope:
        try:
            return await work()
        except Exception as exc:
            if not scope.cancel_called:
                if isinstance(exc, RunnerError):
                    raise
                raise translate(exc) from exc
    raise TransportError(f"no complete reply within {format_duration(deadline)}", sent=True)


class HttpxTransport:
    """An httpx.AsyncClient: over the httpx-aiohttp transport in the product (`aiohttp=True`),
    over any httpx transport in tests. `module` is the httpx API the client comes from
    (the benchmarks pass the fork httpx2)."""

    def __init__(
        self,
        client: Any,
        module: ModuleType = httpx,
        *,
        aiohttp: bool = False,
        bounds: Bounds = Bounds(),
    ) -> None:
        self._client = client
        self._x = module
        self._aiohttp = aiohttp
        self._bounds = bounds

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Reply:
        async def work() -> Reply:
            async with self._client.stream(
                method, url, headers=headers, params=params, json=json
            ) as response:
                head = _lower(response.headers)
                raw, encoding = self._raw(response)
                body = await _read_reply(
                    response.status_code, head, raw, encoding, self._bounds.max_reply_bytes
                )
                return Reply(response.status_code, head, body)

        return await _within(self._bounds.deadline, work, self._translate)

    async def download(
        self, url: str, dest: Path, *, headers: Mapping[str, str], max_bytes: int | None
    ) -> tuple[Reply, int]:
        async def work() -> tuple[Reply, int]:
            async with self._client.stream(
                "GET", url, headers=headers, follow_redirects=False
            ) as response:
                head = _lower(response.headers)
                raw, encoding = self._raw(response)
                if not 200 <= response.status_code < 300:
                    body = await _read_reply(
                        response.status_code, head, raw, encoding, ERROR_BODY_LIMIT
                    )
                    return Reply(response.status_code, head, body), 0
                written = await _stream_to(dest, raw, encoding, max_bytes)
                return Reply(response.status_code, head, b""), written

        return await _within(self._bounds.download_deadline, work, self._translate)

    def _raw(self, response: Any) -> tuple[AsyncIterator[bytes], str | None]:
        """The body as it came (decoded by `_pour`, counted decoded) and its encoding."""
        try:
            content: bytes = response.content  # a reply built in memory (MockTransport)
        except self._x.ResponseNotRead:
            return response.aiter_raw(CHUNK), response.headers.get("content-encoding")
        return _once(content), None

    def _translate(self, exc: Exception) -> Exception:
        """httpx exceptions → TransportError, the one place that knows them."""
        x = self._x
        name = type(exc).__name__
        if self._aiohttp and exc.__cause__ is not None:
            # httpx-aiohttp maps every aiohttp ClientConnectionError, including a server
            # that hung up after reading the request, to ConnectTimeout: judge by the cause.
            return _translate_aiohttp(exc.__cause__, name) or exc
        reason = network_reason(exc)
        if isinstance(exc, x.ConnectTimeout):
            return TransportError(
                f"could not connect ({name}: {exc})", sent=False, reason="timed out"
            )
        if isinstance(exc, x.ConnectError):
            return TransportError(f"could not connect ({name}: {exc})", sent=False, reason=reason)
        if isinstance(exc, x.PoolTimeout):
            return TransportError(f"no free connection ({name})", sent=False, reason="timed out")
        if isinstance(exc, x.TimeoutException):
            return TransportError(
                f"timed out after sending ({name})", sent=True, reason="timed out"
            )
        if isinstance(exc, x.TransportError):
            return TransportError(f"connection lost ({name}: {exc})", sent=True, reason=reason)
        return exc

    async def aclose(self) -> None:
        await self._client.aclose()


# -- reading bodies: decoded, capped, cut short ------------------------------------------------


class _Inflater:
    """One Content-Encoding step (gzip or deflate) giving at most CHUNK bytes per step: a
    compression bomb meets the cap one chunk past it, never inflated in one piece."""

    def __init__(self, coding: str) -> None:
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise ReplyError(f"the reply has an unsupported Content-Encoding {coding!r}")
        self._coding = coding
        self._z: Any = None if coding == "deflate" else zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._head = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        if self._z is None:
            # deflate comes zlib-wrapped (as specified) or raw (some servers): the first two
            # bytes tell which.
            self._head += data
            if len(self._head) < 2:
                return
            data, self._head = self._head, b""
            wrapped = data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0
            self._z = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        z = self._z
        while data and not z.eof:
            try:
                out = z.decompress(data, CHUNK)
            except zlib.error as exc:
                detail = f"the reply's {self._coding} encoding is corrupt ({exc})"
                raise ReplyError(detail) from None
            if not out and len(z.unconsumed_tail) == len(data):
                return  # no progress possible (cannot happen with zlib; never spin)
            data = z.unconsumed_tail
            if out:
                yield out

    def finish(self) -> Iterator[bytes]:
        if self._z is not None and not self._z.eof:
            # What a step left pending inside zlib: at most one match (258 bytes).
            rest = self._z.decompress(b"", CHUNK)
            if rest:
                yield rest


class _Decoder:
    """A Content-Encoding chain (`gzip`, `deflate`, `identity`, in the order applied)."""

    def __init__(self, encoding: str | None) -> None:
        codings = [c.strip().lower() for c in (encoding or "").split(",")]
        self._steps = [_Inflater(c) for c in reversed(codings) if c and c != "identity"]

    @property
    def identity(self) -> bool:
        return not self._steps

    def feed(self, data: bytes) -> Iterator[bytes]:
        return self._through(0, data)

    def finish(self) -> Iterator[bytes]:
        for i, step in enumerate(self._steps):
            for piece in step.finish():
                yield from self._through(i + 1, piece)

    def _through(self, i: int, data: bytes) -> Iterator[bytes]:
        if i == len(self._steps):
            if data:
                yield data
            return
        for piece in self._steps[i].feed(data):
            yield from self._through(i + 1, piece)


async def _pour(
    raw: AsyncIterator[bytes], decoder: _Decoder, sink: Callable[[bytes], bool]
) -> None:
    """Decode `raw` piece by piece into `sink` until it returns False. A connection lost
    mid-body is TransportError (the request was sent): the reply was cut short."""
    received = 0
    try:
        async for chunk in raw:
            received += len(chunk)
            for piece in decoder.feed(chunk):
                if not sink(piece):
                    return
    except RunnerError:
        raise
    except Exception as exc:
        raise TransportError(
            f"the reply was cut short after {received} bytes ({type(exc).__name__})", sent=True
        ) from exc
    for piece in decoder.finish():
        if not sink(piece):
            return


async def _read_reply(
    status: int,
    headers: Mapping[str, str],
    raw: AsyncIterator[bytes],
    encoding: str | None,
    cap: int,
) -> bytes:
    """A reply's decoded body. A 2xx body past `cap` is TooLargeError (at once when its
    Content-Length says so); an error body is read for its message: its first
    ERROR_BODY_LIMIT bytes are kept and the rest is never read."""
    ok = 200 <= status < 300
    limit = cap if ok else min(cap, ERROR_BODY_LIMIT)
    too_large = TooLargeError(f"the reply is larger than the {_size(cap)} cap")
    decoder = _Decoder(encoding)
    length = headers.get("content-length", "")
    if ok and decoder.identity and length.isdigit() and int(length) > cap:
        raise too_large
    body = bytearray()

    def keep(piece: bytes) -> bool:
        body.extend(piece)
        if len(body) <= limit:
            return True
        if ok:
            raise too_large
        del body[limit:]
        return False

    await _pour(raw, decoder, keep)
    return bytes(body)


async def _stream_to(
    dest: Path, raw: AsyncIterator[bytes], encoding: str | None, max_bytes: int | None
) -> int:
    """Write the decoded `raw` to `dest`, stopping with TooLargeError past `max_bytes`."""
    decoder = _Decoder(encoding)
    written = 0
    try:
        handle = dest.open("wb")
    except OSError as exc:
        raise store_error(dest, exc) from exc

    def write(piece: bytes) -> bool:
        nonlocal written
        written += len(piece)
        if max_bytes is not None and written > max_bytes:
            raise TooLargeError(f"larger than the {max_bytes}-byte cap")
        try:  # our disk, not the network: a StoreError, never "the reply was cut short"
            handle.write(piece)
        except OSError as exc:
            raise store_error(dest, exc) from exc
        return True

    try:
        await _pour(raw, decoder, write)
        try:
            handle.flush()
        except OSError as exc:
            raise store_error(dest, exc) from exc
    finally:
        with suppress(OSError):  # after a failed write, closing fails the same way
            handle.close()
    return written


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n}-byte"


def _translate_aiohttp(cause: BaseException, name: str) -> TransportError | None:
    import aiohttp  # type: ignore[import-not-found,unused-ignore]

    kind = type(cause).__name__
    reason = network_reason(cause)
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return TransportError(
            f"could not connect ({kind}: {cause})", sent=False, reason="timed out"
        )
    if isinstance(cause, aiohttp.ClientConnectorError):
        return TransportError(f"could not connect ({kind}: {cause})", sent=False, reason=reason)
    if isinstance(cause, TimeoutError):
        return TransportError(f"timed out ({kind}: {cause})", sent=True, reason="timed out")
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        reason = reason or "connection closed"
    if isinstance(cause, aiohttp.ClientError):
        return TransportError(
            f"connection lost or timed out ({kind}: {cause})", sent=True, reason=reason
        )
    return None


def _lower(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers.items()}


def make_transport(
    pool_size: int, *, timeout: float = 30.0, bounds: Bounds = Bounds()
) -> Transport:
    """One httpx.AsyncClient over the httpx-aiohttp transport (aiohttp's connection pool):
    of the httpx-API clients it costs the least CPU per request (README.md#performance;
    the alternatives measured live in tests/bench/clients.py). A pool of `pool_size`
    keep-alive connections (keep-alive = pool size,
    docs/engineering.md#pool-size-and-keep-alive); `timeout` bounds each read, `bounds`
    each whole request and each API reply's size.
    """
    from httpx_aiohttp import AiohttpTransport as HttpxOverAiohttp  # type: ignore[import-not-found,unused-ignore]

    limits = httpx.Limits(
        max_connections=pool_size, max_keepalive_connections=pool_size, keepalive_expiry=30.0
    )
    client = httpx.AsyncClient(
        transport=HttpxOverAiohttp(limits=limits),
        timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
        headers={"user-agent": USER_AGENT, "accept-encoding": ACCEPT_ENCODING},
    )
    return HttpxTransport(client, aiohttp=True, bounds=bounds)


# -- the provider client ------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class ProviderClient:
    """`ProviderHttp` for one provider (and, through `for_job`, one job)."""

    provider: str
    base_url: str
    api_key: str = dataclasses.field(repr=False)
    adapter: Adapter
    gate: Gate
    transport: Transport
    retry: RetryPolicy = DEFAULT_RETRY
    rng: random.Random = dataclasses.field(default_factory=random.Random)
    max_download_bytes: int | None = 512 * 1024 * 1024
    job_id: str | None = None
    # Out-of-band downloads (signed URLs, third-party documents) at once, per provider:
    # shared by every job's view (`for_job` copies the reference).
    offsite: anyio.CapacityLimiter = dataclasses.field(
        default_factory=lambda: anyio.CapacityLimiter(OFFSITE_CONCURRENCY), repr=False
    )
    _notes: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    _on_note: Callable[[str], None] | None = dataclasses.field(default=None, repr=False)

    def for_job(
        self,
        job_id: str,
        *,
        notes: dict[str, Any] | None = None,
        on_note: Callable[[str], None] | None = None,
    ) -> ProviderClient:
        """A view for one job; `notes` is that job's durable memory, `on_note` persists it."""
        return dataclasses.replace(
            self,
            job_id=job_id,
            _notes=notes if notes is not None else {},
            _on_note=on_note,
        )

    @property
    def notes(self) -> Mapping[str, Any]:
        return self._notes

    def note(self, key: str, value: Any) -> None:
        self._notes[key] = value
        if self._on_note is not None:
            self._on_note(key)

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def is_api_url(self, url: str) -> bool:
        """Same scheme, host and port as the provider's API, and under its base path: the
        only place a key may go (a storage path beside the API on one host is not it)."""
        a, b = urlsplit(url), urlsplit(self.base_url)
        if (a.scheme, a.hostname, a.port) != (b.scheme, b.hostname, b.port):
            return False
        base = b.path.rstrip("/")
        return not base or a.path == base or a.path.startswith(base + "/")

    def _error(
        self,
        what: str,
        detail: str,
        kind: ErrorKind,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        not_accepted: bool = False,
        network: str | None = None,
        offsite: bool = False,
    ) -> ProviderCallError:
        job = f" job {self.job_id}" if self.job_id else ""
        # A provider that echoes the key in its error body must not put it in our message.
        return ProviderCallError(
            redact(f"{self.provider}{job}: {what}: {detail}", [self.api_key]),
            provider=self.provider,
            job_id=self.job_id,
            kind=kind,
            status_code=status,
            code=code,
            retry_after=retry_after,
            not_accepted=not_accepted,
            network=network,
            offsite=offsite,
        )

    def _unanswered(self, what: str, exc: TransportError) -> ProviderCallError:
        """No HTTP answer: transient, and provably not accepted when it was never sent."""
        failure = self._error(
            what, str(exc), ErrorKind.TRANSIENT, not_accepted=not exc.sent, network=exc.reason
        )
        failure.__cause__ = exc
        return failure

    def _check_stopped(self, what: str) -> None:
        """A request that waited for its slot while the key was refused is not sent at all."""
        if self.gate.stopped is not None:
            raise self._error(what, self.gate.stopped, ErrorKind.AUTH, not_accepted=True)

    def _judge(self, what: str, reply: Reply, endpoint: Any, sent_at: float) -> ProviderCallError:
        """Classify a non-2xx reply; a 429 (or 503 with a hint) pauses the whole provider."""
        api: ApiError = self.adapter.classify_error(reply)
        status = reply.status_code
        hint = wait_hint(reply.headers, time.time(), api.retry_after, throttled=status == 429)
        code = f" {api.code}" if api.code else ""
        if (
            status == 429
            or api.kind is ErrorKind.RATE_LIMITED
            or (api.kind is ErrorKind.BUSY and hint is not None)
        ):
            self.gate.throttled(endpoint, sent_at, hint, f"{what}: HTTP {status}{code}")
        return self._error(
            what,
            f"HTTP {status}{code}: {api.message}",
            api.kind,
            status=status,
            code=api.code,
            retry_after=hint,
            not_accepted=api.kind in _NOT_ACCEPTED,
        )

    async def send(self, request: Request) -> Reply:
        what = f"{request.method} {urlsplit(request.path).path}"
        url = self.url(request.path)
        # An absolute path off the API (a Request may carry one) never gets the key.
        auth = self.adapter.auth_headers(self.api_key) if self.is_api_url(url) else {}
        headers = {**auth, **request.headers}
        if request.expect == "json":
            headers.setdefault("accept", "application/json")
        retries = self.retry.attempts if request.method in IDEMPOTENT else 1
        attempt = 0
        while True:
            attempt += 1
            async with self.gate.request(request.endpoint) as sent_at:
                self._check_stopped(what)
                try:
                    reply: Reply | None = await self.transport.request(
                        request.method, url, headers=headers, params=request.params,
                        json=request.json,
                    )  # fmt: skip
                    failure = None
                except TransportError as exc:
                    reply = None
                    failure = self._unanswered(what, exc)
                except ReplyError as exc:  # too large or undecodable: the same again
                    reply = None
                    failure = self._error(what, str(exc), ErrorKind.OTHER)
                    failure.__cause__ = exc
            if reply is not None:
                self.gate.heard(reply.status_code)
                self.gate.observe(parse_rate_limit(reply.headers, time.time()))
                if 200 <= reply.status_code < 300:
                    return reply
                if 300 <= reply.status_code < 400:
                    failure = self._redirected(what, reply)
                else:
                    failure = self._judge(what, reply, request.endpoint, sent_at)
            assert failure is not None
            if failure.kind not in _RETRYABLE or attempt >= retries:
                raise failure
            if failure.kind is ErrorKind.TRANSIENT:
                if self.gate.outage.down:
                    raise failure  # one try while it is down: the engine probes, not us
                await self.gate.clock.sleep(retry_delay(self.retry, attempt, self.rng))
            # a 429 / busy reply already paused the gate: the next try waits there

    def _redirected(self, what: str, reply: Reply) -> ProviderCallError:
        """An API request is never redirected (a hop could take the key off the API, or
        loop); a POST so answered may still have been acted on."""
        to = reply.headers.get("location") or "nowhere"
        return self._error(
            what,
            f"HTTP {reply.status_code}: redirected to {to}; "
            "runner does not follow redirects of API requests",
            ErrorKind.OTHER,
            status=reply.status_code,
        )

    async def download(
        self, url: str, dest: Path, *, send_key: bool, max_bytes: int | None = None
    ) -> int:
        """Stream `url` into `dest` atomically (a temporary name beside it, renamed when
        complete), at most `max_bytes` (else the client's cap).

        An API download (`send_key` and the URL is under the provider's base URL) goes
        through the provider's gate as a "download" request, with the key. Anything else is
        out of band (a signed URL, a third-party document): no key, no provider budget
        spent, no provider pause on its 429s, but its own small concurrency cap.
        """
        url = self.url(url)
        cap = max_bytes if max_bytes is not None else self.max_download_bytes
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_for(dest)
        attempt = redirects = 0
        try:
            while True:
                attempt += 1
                what = f"GET {urlsplit(url).path}"
                on_api = send_key and self.is_api_url(url)
                headers = self.adapter.auth_headers(self.api_key) if on_api else {}
                async with self._download_slot(on_api) as sent_at:
                    if on_api:
                        self._check_stopped(what)
                    try:
                        reply, size = await self.transport.download(
                            url, tmp, headers=headers, max_bytes=cap
                        )
                        failure = None
                    except TransportError as exc:
                        failure = self._unanswered(what, exc)
                        failure.offsite = not on_api
                    except TooLargeError as exc:
                        raise self._error(what, str(exc), ErrorKind.INVALID) from exc
                    except ReplyError as exc:
                        raise self._error(what, str(exc), ErrorKind.OTHER) from exc
                if failure is None:
                    if on_api:
                        self.gate.heard(reply.status_code)
                    if 200 <= reply.status_code < 300:
                        os.replace(tmp, dest)
                        return size
                    location = reply.headers.get("location")
                    if 300 <= reply.status_code < 400 and location:
                        # Transports never follow a redirect: it is followed here, with
                        # the key only while it stays on the provider's API (a large
                        # result's storage host must never see it), and a loop ends.
                        if redirects >= MAX_REDIRECTS:
                            raise self._error(
                                what,
                                f"HTTP {reply.status_code}: too many redirects (more than "
                                f"{MAX_REDIRECTS}; a redirect loop?), last to {location}",
                                ErrorKind.OTHER,
                                status=reply.status_code,
                            )
                        redirects += 1
                        attempt -= 1
                        url = urljoin(url, location)
                        continue
                    failure = (
                        self._judge(what, reply, "download", sent_at)
                        if on_api
                        else self._judge_offsite(what, reply)
                    )
                if failure.kind not in _RETRYABLE or attempt >= self.retry.attempts:
                    raise failure
                if on_api and failure.kind is ErrorKind.TRANSIENT and self.gate.outage.down:
                    raise failure  # one try while the provider is down
                if failure.kind is ErrorKind.TRANSIENT or not on_api:
                    delay = retry_delay(self.retry, attempt, self.rng)
                    if failure.retry_after is not None and not on_api:
                        delay = min(max(delay, failure.retry_after), MAX_OFFSITE_WAIT)
                    await self.gate.clock.sleep(delay)
        finally:
            tmp.unlink(missing_ok=True)

    @asynccontextmanager
    async def _download_slot(self, on_api: bool) -> AsyncIterator[float]:
        if on_api:
            async with self.gate.request("download") as sent_at:
                yield sent_at
        else:
            async with self.offsite:
                yield self.gate.clock.now()

    def _judge_offsite(self, what: str, reply: Reply) -> ProviderCallError:
        """A storage host's error: classified by status alone (its body is not the
        provider's), and never a reason to pause the provider."""
        status = reply.status_code
        hint = wait_hint(reply.headers, time.time(), None, throttled=status == 429)
        kind = _OFFSITE_KINDS.get(status)
        if kind is None:
            kind = ErrorKind.TRANSIENT if status >= 500 else ErrorKind.OTHER
        detail = reply.excerpt() or "no body"
        return self._error(
            what, f"HTTP {status}: {detail}", kind, status=status, retry_after=hint, offsite=True
        )

    async def probe(self) -> str | None:
        """Is the provider reachable? One GET of its base URL, without the key, through the
        gate (a status request) and never retried: None when any HTTP answer below 500 came
        back, else why not in a few words. Never a POST: a probe must not act twice."""
        async with self.gate.request("status"):
            try:
                reply = await self.transport.request("GET", self.base_url, headers={})
            except TransportError as exc:
                return exc.reason
        self.gate.heard(reply.status_code)
        return None if reply.status_code < 500 else f"HTTP {reply.status_code}"
