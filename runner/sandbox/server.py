"""Serving the sandbox with uvicorn: in a background thread (tests, `run --sandbox`) or in
the foreground (`runner sandbox`)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from runner.errors import RunnerError
from runner.sandbox.app import provider_apis

STARTUP_TIMEOUT = 10.0


def sandbox_base_urls(origin: str) -> dict[str, str]:
    """Provider name → the base URL a client of that provider uses against `origin`: the
    origin plus the mount path (`prefix`) of its sandbox API (README.md#the-sandbox)."""
    origin = origin.rstrip("/")
    return {api.name: origin + api.prefix for api in provider_apis()}


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    """A served sandbox: where it listens, and each provider's base URL on it."""

    origin: str
    base_urls: dict[str, str] = field(default_factory=dict)
    app: Any = field(default=None, repr=False)


def _config(app: Any, sock: socket.socket) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop=_best("uvloop", "asyncio"),
        http=_best("httptools", "h11"),
        timeout_keep_alive=30,
        fd=None,
    )


def _best(preferred: str, fallback: str) -> str:
    try:
        __import__(preferred)
    except ImportError:
        return fallback
    return preferred


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; port 0 picks a free one (read it back from getsockname)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are
    # TCP, and without it every answer written in two parts waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise RunnerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def origin_for(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningSandbox]:
    """Run `app` under uvicorn on a background thread for the duration of the block."""
    sock = bind(host, port)
    server = uvicorn.Server(_config(app, sock))
    failure: list[BaseException] = []

    def target() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # surfaced to the caller below
            failure.append(exc)

    thread = threading.Thread(target=target, name="runner-sandbox", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started:
        if failure or not thread.is_alive():
            sock.close()
            raise RunnerError(f"sandbox server failed to start: {failure[0] if failure else '?'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RunnerError("sandbox server did not start within 10 s")
        time.sleep(0.005)
    origin = origin_for(sock)
    try:
        yield RunningSandbox(origin, sandbox_base_urls(origin), app)
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_TIMEOUT)
        sock.close()


class _ForegroundServer(uvicorn.Server):
    """uvicorn re-raises the signal that stopped it once it has shut down; a sandbox asked to
    stop has done what it was asked, so it keeps the handlers and lets the caller exit 0."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        handled = (signal.SIGINT, signal.SIGTERM)
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def serve_forever(app: Any, sock: socket.socket) -> None:
    """Serve in the foreground (main thread) until SIGINT or SIGTERM, then shut down cleanly."""
    _ForegroundServer(_config(app, sock)).run(sockets=[sock])
