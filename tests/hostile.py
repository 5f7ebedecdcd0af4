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


def huge(size: int, *, status: int = 200, announce: bool = False) -> Handler:
    """`size` bytes of one JSON string, streamed in 1 MiB writes (the server stays small):
    chunked, so only counting tells the size, or with `announce` a Content-Length."""

    async def handle(seen: Seen, writer: asyncio.StreamWriter) -> None:
        framing = {"content-length": str(size)} if announce else {"transfer-encoding": "chunked"}
        if not await _send(writer, _head(status, {"content-type": "application/json", **framing})):
            return

        def frame(data: bytes) -> bytes:
            return data if announce else f"{len(data):x}\r\n".encode() + data + b"\r\n"

        block = b"x" * MiB
        left = size - 2
        pieces = [b'"']
        while left > 0:
            pieces.append(block[: min(left, MiB)])
            left -= MiB
            if not await _send(writer, b"".join(frame(p) for p in pieces)):
                return
            pieces = []
        await _send(writer, frame(b'"') + (b"" if announce else b"0\r\n\r\n"))

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
        except asyncio.CancelledError:
            pass  # closed by `close()`: this task ends here, quietly
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


# -- a Pulse imitation: the job's file_url names its behaviour ---------------------------------

PULSE_BEHAVIOURS = (
    "ok",
    "html-status",
    "wrong-types",
    "truncated-submit",
    "redirect-status",
    "redirect-download",
    "never-ending",
    "drip-submit",
    "drip-status",
    "drip-download",
    "huge-submit",
    "huge-status",
    "gzip-bomb",
    "deflate-bomb",
)


def pulse(*, huge_bytes: int = 200 * MiB, bomb_bytes: int = 1024 * MiB) -> Route:
    """Pulse's API (`POST /extract` → `job_id`, `GET /job/{id}`, large results by URL), each
    job misbehaving as its `file_url` (`https://hostile.test/<behaviour>.pdf`) says."""
    processing = json({"status": "processing"})

    def large(name: str) -> Handler:
        return json({"status": "completed", "result": {"is_url": True, "url": f"/files/{name}"}})

    def submit(name: str) -> Handler:
        match name:
            case "wrong-types":
                return json({"job_id": ["not", "an", "id"], "status": 7})
            case "truncated-submit":
                return truncated(b'{"job_id": "trunc', declared=1000)
            case "drip-submit":
                return drip(jsonlib.dumps({"job_id": name}).encode())
            case "huge-submit":
                return huge(huge_bytes, announce=True)
        return json({"job_id": name, "status": "pending"})

    def status(name: str) -> Handler:
        match name:
            case "ok":
                return json({"status": "completed", "result": {"markdown": "# ok"}})
            case "html-status":
                return html()
            case "redirect-status":
                return redirect(f"/job/{name}")
            case "drip-status":
                return drip(b'{"status": "processing"}' + b" " * 100)
            case "huge-status":
                return huge(huge_bytes)
            case "gzip-bomb" | "deflate-bomb":
                return bomb(name.split("-")[0], bomb_bytes)
            case "redirect-download" | "drip-download":
                return large(name)
        return processing

    def files(rest: str) -> Handler:
        name, _, hop = rest.partition("/")
        if name == "drip-download":
            return drip(b"x" * 1000)
        if name == "redirect-download":
            return redirect(f"/files/{name}/{int(hop or 0) + 1}")
        return body(b"{}")

    def route(seen: Seen) -> Handler:
        if seen.method == "POST" and seen.path == "/extract":
            url = str((seen.json() or {}).get("file_url", ""))
            return submit(url.rsplit("/", 1)[-1].removesuffix(".pdf"))
        if seen.path.startswith("/job/"):
            return status(seen.path.removeprefix("/job/"))
        if seen.path.startswith("/files/"):
            return files(seen.path.removeprefix("/files/"))
        return json({"error": "not found"}, status=404)

    return route
