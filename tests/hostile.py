"""A hostile HTTP server for tests: raw asyncio streams on 127.0.0.1 answering like a broken or
malicious provider (HTML with 200, wrong JSON types, cut-short bodies, redirect loops, 1 byte/s
drips, huge bodies, gzip and deflate bombs). A `route` picks each request's `Handler`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json as jsonlib
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

MiB = 1024 * 1024
_REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 404: "Not Found", 500: "Error"}


@dataclass
class Seen:
    """One request as it arrived (the server's books)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = field(repr=False)

    def json(self) -> Any:
        return jsonlib.loads(self.body) if self.body else None


Handler = Callable[[Seen, asyncio.StreamWriter], Awaitable[None]]
Route = Callable[[Seen], Handler]


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in {**headers, "connection": "close"}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _send(writer: asyncio.StreamWriter, data: bytes) -> bool:
    """Write and drain; False once the client has gone (it stopped reading and hung up)."""
    try:
        writer.write(data)
        await writer.drain()
    except (ConnectionError, OSError):
        return False
    return True


# -- behaviours --------------------------------------------------------------------------------


def body(
    data: bytes,
    *,
    status: int = 200,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Handler:
    async def handle(seen: Seen, writer: asyncio.StreamWriter) -> None:
        head = {"content-type": content_type, "content-length": str(len(data)), **(headers or {})}
        await _send(writer, _head(status, head) + data)

    return handle


def json(obj: Any, *, status: int = 200) -> Handler:
    return body(jsonlib.dumps(obj).encode(), status=status)


def html(status: int = 200) -> Handler:
    """A login or maintenance page where JSON was expected."""
    page = b"<!doctype html><html><head><title>Sign in</title></head><body>Sign in</body></html>"
    return body(page, status=status, content_type="text/html; charset=utf-8")


def truncated(data: bytes, declared: int) -> Handler:
    """Announce `declared` bytes, send `data` (fewer), hang up."""

    async def handle(seen: Seen, writer: asyncio.StreamWriter) -> None:
        head = {"content-type": "application/json", "content-length": str(declared)}
        await _send(writer, _head(200, head) + data)

    return handle


def redirect(location: str, status: int = 302) -> Handler:
    return body(b"", status=status, headers={"location": location})


def drip(data: bytes, *, interval: float = 1.0, status: int = 200) -> Handler:
    """A complete, honest reply sent one byte every `interval` seconds."""

    async def handle(seen: Seen, writer: asyncio.StreamWriter) -> None:
        head = {"content-type": "application/json", "content-length": str(len(data))}
        if not await _send(writer, _head(status, head)):
            return
        for i in range(len(data)):
            if not await _send(writer, data[i : i + 1]):
                return
            await asyncio.sleep(interval)

    return handle


def huge(size: int, *, status: int = 200, content_type: str = "application/json") -> Handler:
    """`size` bytes of a JSON string, streamed in 1 MiB writes (the server stays small)."""

    async def handle(seen: Seen, writer: asyncio.StreamWriter) -> None:
        head = {"content-type": content_type, "content-length": str(size)}
        if not await _send(writer, _head(status, head) + b'"'):
            return
        block = b"x" * MiB
        left = size - 2
        while left > 0:
            if not await _send(writer, block[: min(left, MiB)]):
                return
            left -= MiB
        await _send(writer, b'"')

    return handle


def bomb(encoding: str, inflated: int = 1024 * MiB) -> Handler:
    """Content-Encoding `gzip` or `deflate`: about 1 MB on the wire per GiB of zeros inflated."""
    data = bomb_bytes(encoding, inflated)

    async def handle(seen: Seen, writer: asyncio.StreamWriter) -> None:
        head = {
            "content-type": "application/json",
            "content-encoding": encoding,
            "content-length": str(len(data)),
        }
        await _send(writer, _head(200, head) + data)

    return handle


@functools.cache
def bomb_bytes(encoding: str, inflated: int) -> bytes:
    """`inflated` zero bytes, gzip- or zlib-compressed, valid to the trailer, built in well
    under a second: after a full flush the compressor's output repeats block for block."""
    if encoding not in ("gzip", "deflate"):
        raise ValueError(encoding)
    gzip = encoding == "gzip"
    block = bytes(MiB)
    blocks = max(2, inflated // MiB)
    z = zlib.compressobj(9, zlib.DEFLATED, 31 if gzip else 15)
    first = z.compress(block) + z.flush(zlib.Z_FULL_FLUSH)
    unit = z.compress(block) + z.flush(zlib.Z_FULL_FLUSH)
    tail = z.flush(zlib.Z_FINISH)
    check = 0 if gzip else 1
    for _ in range(blocks):
        check = (zlib.crc32 if gzip else zlib.adler32)(block, check)
    size = blocks * MiB
    if gzip:
        trailer = check.to_bytes(4, "little") + (size % 2**32).to_bytes(4, "little")
    else:
        trailer = check.to_bytes(4, "big")
    return first + unit * (blocks - 1) + tail[: -len(trailer)] + trailer


# -- the server --------------------------------------------------------------------------------


class Hostile:
    """Serves `route` on 127.0.0.1 (an ephemeral port); every request is kept in `seen`."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self.seen: list[Seen] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def origin(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        return self.origin

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            seen = await _read_request(reader)
            if seen is not None:
                self.seen.append(seen)
                await self.route(seen)(seen, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Seen | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    line, *rest = head.decode("latin-1").split("\r\n")
    method, target, _ = line.split(" ", 2)
    headers = {}
    for item in rest:
        if ":" in item:
            name, value = item.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    data = await reader.readexactly(length) if length else b""
    return Seen(method, target.split("?", 1)[0], headers, data)


@contextlib.contextmanager
def serve_in_thread(route: Route) -> Iterator[Hostile]:
    """`route` served by a `Hostile` on its own event loop in a daemon thread (for a test
    that runs `runner` in a subprocess, or a synchronous caller)."""
    loop = asyncio.new_event_loop()
    server = Hostile(route)
    ready = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=main, name="hostile", daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
