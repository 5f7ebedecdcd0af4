"""The overlap lock per manifest name: `flock` on `<results root>/.<name>.lock`.

The kernel drops an flock when its holder dies, however it dies, so a crashed run never
leaves a stale lock behind. The holder writes its pid, start time and batch id into the file
for the message a second run prints (and for `runner status`); a disk that refuses that
text is a `StoreError` naming the lock file, and the lock is let go.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from runner.errors import LockHeldError, store_error

LOCK_NAME = ".lock"  # suffix: `.<name>.lock` beside (not inside) `<root>/<name>/`
# A `runner status` probe holds a shared lock for microseconds; a run starting at that very
# moment retries briefly instead of reporting a bogus holder.
_ATTEMPTS = 5
_RETRY_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class Holder:
    """What the holder wrote into the lock file (fields unknown while it is being written)."""

    pid: int | None = None
    started: str | None = None
    batch_id: str | None = None

    def describe(self) -> str:
        pid = str(self.pid) if self.pid is not None else "unknown"
        started = self.started or "unknown"
        return f"pid {pid}, started {started}"


def lock_path(root: Path, name: str) -> Path:
    # Beside the batches, not among them: `<root>/<name>/*` lists only batches and `latest`.
    return root / f".{name}{LOCK_NAME}"


def _parse(text: str) -> Holder:
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    pid = fields.get("pid", "")
    return Holder(
        pid=int(pid) if pid.isdigit() else None,
        started=fields.get("started") or None,
        batch_id=fields.get("batch") or None,
    )


def _read(fd: int) -> Holder:
    os.lseek(fd, 0, os.SEEK_SET)
    return _parse(os.read(fd, 4096).decode("utf-8", errors="replace"))


def held_message(name: str, holder: Holder) -> str:
    if holder.pid is None:  # caught while the holder writes its pid: no command to give
        return (
            f"another run of {name!r} is running ({holder.describe()}); "
            "wait for it to finish, then try again"
        )
    return (
        f"another run of {name!r} is running ({holder.describe()}); "
        f"wait for it to finish, or stop it with: kill {holder.pid}"
    )


class ManifestLock:
    """A held lock; release it with `release()` or by leaving the `with` block."""

    def __init__(self, path: Path, name: str, fd: int, started: datetime) -> None:
        self.path = path
        self.name = name
        self._fd: int | None = fd
        self.started = started
        self._batch_id: str | None = None
        try:
            self._write()
        except BaseException:
            self.release()
            raise

    @property
    def held(self) -> bool:
        return self._fd is not None

    def note_batch(self, batch_id: str) -> None:
        """Record which batch this run is writing (shown by `runner status`)."""
        self._batch_id = batch_id
        self._write()

    def _write(self) -> None:
        if self._fd is None:
            return
        started = self.started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = f"pid={os.getpid()}\nstarted={started}\n"
        if self._batch_id:
            text += f"batch={self._batch_id}\n"
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text.encode("utf-8"), 0)
        except OSError as exc:
            raise store_error(self.path, exc) from exc

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(OSError):  # a read-only remount: the text stays, harmless
                os.ftruncate(fd, 0)  # no stale holder text; the file itself stays (see flock(2))
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> ManifestLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(root: Path, name: str, *, now: datetime | None = None) -> ManifestLock:
    """Take the lock of manifest `name` under `root`, or raise LockHeldError naming the
    holder's pid and start time. Never blocks for more than a few milliseconds."""
    path = lock_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (PEP 446)
    for attempt in range(_ATTEMPTS):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt + 1 == _ATTEMPTS:
                holder = _read(fd)
                os.close(fd)
                raise LockHeldError(held_message(name, holder)) from None
            time.sleep(_RETRY_SECONDS)
        except BaseException:
            os.close(fd)
            raise
    return ManifestLock(path, name, fd, now or datetime.now(UTC))


def probe(root: Path, name: str) -> Holder | None:
    """Who holds the lock of `name`, or None when nobody does."""
    path = lock_path(root, name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
