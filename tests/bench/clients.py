"""The HTTP clients the benchmarks compare against the product's (httpx over the
httpx-aiohttp transport): plain httpx, httpx2 (the `bench` extra) and plain aiohttp, each
behind runner's Transport seam, and `factory(name)` to pass as `transport_factory`."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from runner.http.client import (
    ACCEPT_ENCODING,
    CHUNK,
    ERROR_BODY_LIMIT,
    USER_AGENT,
    Bounds,
    HttpxTransport,
    Transport,
    _lower,
    _read_reply,
    _stream_to,
    _translate_aiohttp,
    _within,
    make_transport,
)
from runner.providers.base import Reply

DEFAULT = "httpx-aiohttp"  # the product's: runner.http.client.make_transport
CLIENTS = ("httpx", "httpx2", DEFAULT, "aiohttp")
# The module each client needs beyond runner's own dependencies.
NEEDS = {"httpx2": "httpx2", DEFAULT: "httpx_aiohttp", "aiohttp": "aiohttp"}
BOUNDS = Bounds()  # the product's deadlines and reply cap


def available(name: str) -> bool:
    module = NEEDS.get(name)
    return module is None or importlib.util.find_spec(module) is not None


def make(name: str, pool_size: int, *, timeout: float = 30.0, bounds: Bounds = BOUNDS) -> Transport:
    """A transport of client `name` with the product's pool, timeouts and headers."""
    if name == DEFAULT:
        return make_transport(pool_size, timeout=timeout, bounds=bounds)
    if name == "aiohttp":
        return AiohttpTransport(pool_size, timeout, bounds)
    if name not in CLIENTS:
        raise ValueError(f"unknown HTTP client {name!r} (use one of {', '.join(CLIENTS)})")
    module: ModuleType = httpx
    if name == "httpx2":
        import httpx2  # type: ignore[import-not-found,unused-ignore]

        module = httpx2
    client = module.AsyncClient(
        limits=module.Limits(
            max_connections=pool_size, max_keepalive_connections=pool_size, keepalive_expiry=30.0
        ),
        timeout=module.Timeout(timeout, connect=min(10.0, timeout)),
        headers={"user-agent": USER_AGENT, "accept-encoding": ACCEPT_ENCODING},
    )
    return HttpxTransport(client, module, bounds=bounds)


def factory(name: str) -> Callable[[int], Transport]:
    """`transport_factory` for run_batch & co.: pool size → a transport of client `name`."""
    return lambda pool_size: make(name, pool_size)


class AiohttpTransport:
    """aiohttp's own client, without httpx's models on top: the cheapest per request."""

    def __init__(self, pool_size: int, timeout: float, bounds: Bounds = BOUNDS) -> None:
        import aiohttp  # type: ignore[import-not-found,unused-ignore]

        self._aiohttp = aiohttp
        self._pool_size = pool_size
        self._bounds = bounds
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(10.0, timeout), sock_read=timeout
        )
        self._session: Any = None

    def _open(self) -> Any:
        # Made on first use, inside the event loop that will run it.
        if self._session is None:
            connector = self._aiohttp.TCPConnector(
                limit=self._pool_size, limit_per_host=self._pool_size, keepalive_timeout=30.0
            )
            self._session = self._aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers={"user-agent": USER_AGENT, "accept-encoding": ACCEPT_ENCODING},
                auto_decompress=False,  # runner decodes, counting decoded bytes against caps
            )
        return self._session

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
            async with self._open().request(
                method,
                self._url(url),
                headers=headers,
                params=query(params),
                json=json,
                allow_redirects=False,
            ) as response:
                head = _lower(response.headers)
                raw = response.content.iter_chunked(CHUNK)
                encoding = head.get("content-encoding")
                body = await _read_reply(
                    response.status, head, raw, encoding, self._bounds.max_reply_bytes
                )
                return Reply(response.status, head, body)

        return await _within(self._bounds.deadline, work, _aiohttp_error)

    async def download(
        self, url: str, dest: Path, *, headers: Mapping[str, str], max_bytes: int | None
    ) -> tuple[Reply, int]:
        async def work() -> tuple[Reply, int]:
            async with self._open().get(
                self._url(url), headers=headers, allow_redirects=False
            ) as response:
                head = _lower(response.headers)
                raw = response.content.iter_chunked(CHUNK)
                encoding = head.get("content-encoding")
                if not 200 <= response.status < 300:
                    body = await _read_reply(response.status, head, raw, encoding, ERROR_BODY_LIMIT)
                    return Reply(response.status, head, body), 0
                written = await _stream_to(dest, raw, encoding, max_bytes)
                return Reply(response.status, head, b""), written

        return await _within(self._bounds.download_deadline, work, _aiohttp_error)

    @staticmethod
    def _url(url: str) -> Any:
        # Sent exactly as given: a signed URL must not be re-quoted.
        from yarl import URL  # type: ignore[import-not-found,unused-ignore]

        return URL(url, encoded=True)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def query(params: Mapping[str, Any] | None) -> list[tuple[str, str]] | None:
    """Query parameters the way httpx encodes them: booleans lower-case, sequences
    repeated (a None is dropped, where httpx sends `name=`)."""
    if not params:
        return None
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is None:
                continue
            text = ("true" if item else "false") if isinstance(item, bool) else str(item)
            pairs.append((name, text))
    return pairs


def _aiohttp_error(exc: Exception) -> Exception:
    return _translate_aiohttp(exc, type(exc).__name__) or exc
