"""A tiny TCP proxy on 127.0.0.1 for network-fault tests: forward, reset, or refuse.

It sits between the runner and a sandbox. `reset()` resets every open connection and every
new one right after accepting it (the client sees its connection reset); `refuse()` closes
the listening socket (the client sees connection refused); `forward()` listens again on the
same port and relays bytes both ways. Threads, so it runs beside any event loop.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Literal

Mode = Literal["forward", "reset", "refuse"]
_RST = struct.pack("ii", 1, 0)  # SO_LINGER on with 0 s: close() sends RST, not FIN


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
    # close() alone would wait for a pump thread blocked in recv() on it; SHUT_RD wakes that
    # thread (and sends nothing), then close() with linger 0 sends the RST.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.mode: Mode = "forward"
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.accepted = 0
        self.port = 0
        self._listen()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- modes ---------------------------------------------------------------------------

    def forward(self) -> None:
        with self._lock:
            self.mode = "forward"
        if self._listener is None:
            self._listen()

    def reset(self) -> None:
        with self._lock:
            self.mode = "reset"
        self._reset_open()

    def refuse(self) -> None:
        with self._lock:
            self.mode = "refuse"
        self._close_listener()
        self._reset_open()

    def close(self) -> None:
        self._close_listener()
        self._reset_open()

    # -- internals -----------------------------------------------------------------------

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        sock.settimeout(0.05)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self._thread = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        sock, thread = self._listener, self._thread
        self._listener = self._thread = None
        if sock is not None:
            sock.close()
        if thread is not None:
            thread.join(timeout=2)

    def _reset_open(self) -> None:
        with self._lock:
            victims = list(self._open)
            self._open.clear()
        for sock in victims:
            _reset(sock)

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with self._lock:
                mode = self.mode
            if mode != "forward":
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:  # reset() may have come while we connected
                forwarding = self.mode == "forward"
                if forwarding:
                    self._open.update((client, server))
            if not forwarding:
                _reset(client)
                _reset(server)
                continue
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(None)
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(src)
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)  # pass the close on
            with contextlib.suppress(OSError):
                src.close()


@contextlib.contextmanager
def proxy_to(origin: str) -> Iterator[TcpProxy]:
    """A proxy in front of `origin` (http://127.0.0.1:PORT), closed after the block."""
    host, port = origin.removeprefix("http://").rsplit(":", 1)
    proxy = TcpProxy((host, int(port)))
    try:
        yield proxy
    finally:
        proxy.close()
