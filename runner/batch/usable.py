"""Checks that what the user gave — `--out`, a manifest path, a sandbox URL — can be used,
before anything is created: each failure is one UsageError naming the thing and the fix."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from runner.errors import UsageError

PROBE_TIMEOUT = 3.0  # seconds; a local sandbox answers in milliseconds
STATS = "/_sandbox/stats"


def _first_file(path: Path) -> Path | None:
    """The first part of `path` (from the root down) that exists and is not a directory."""
    for part in reversed((path, *path.parents)):
        if part.exists() and not part.is_dir():
            return part
    return None


def out_problem(out: Path, exc: OSError) -> str:
    """The one line for an `--out` that cannot be used (pure: the OS's answer in, text out)."""
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = _first_file(out) or out
        return f"--out {out}: {blocker} is a file, not a directory; give --out a directory"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"--out {out}: permission denied; give --out a directory you can write"
    if exc.errno == errno.EROFS:
        return f"--out {out}: read-only file system; give --out a writable directory"
    return f"--out {out}: {exc.strerror or exc}; give --out another directory"


def prepare_out(out: Path) -> None:
    """Make the results root and prove a file can be written in it (UsageError if not)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(out_problem(out, exc)) from None


def require_manifest(path: Path) -> None:
    """A manifest path that names no readable file is one line (before any parsing)."""
    if path.is_dir():
        raise UsageError(f"{path}: is a directory; give the path of a manifest")
    if not path.exists():
        raise UsageError(f"{path}: no such file; give the path of a manifest")


def check_url(flag: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{flag}: {url!r} is not a URL like http://127.0.0.1:8000")


def sandbox_command(url: str) -> str:
    """The command that starts a sandbox at `url` (for a hint)."""
    parts = urlsplit(url)
    host = "" if parts.hostname in ("127.0.0.1", None) else f" --host {parts.hostname}"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"runner sandbox{host} --port {port}"


def sandbox_silence(url: str) -> str | None:
    """Why no sandbox answers at `url` (None when one does): one quick GET of its books."""
    try:
        # trust_env=False: a proxy from the environment must not answer for a local sandbox
        reply = httpx.get(url.rstrip("/") + STATS, timeout=PROBE_TIMEOUT, trust_env=False)
    except httpx.ConnectError as exc:
        return "connection refused" if "refused" in str(exc).lower() else "cannot connect"
    except httpx.TimeoutException:
        return f"no answer within {PROBE_TIMEOUT:g}s"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}"
    if reply.status_code != 200:
        return f"answered {reply.status_code}"
    return None


def require_sandbox(url: str) -> None:
    """`--sandbox URL`: a sandbox must answer there, before anything is created."""
    check_url("--sandbox", url)
    silence = sandbox_silence(url)
    if silence is None:
        return
    if silence.startswith("answered"):
        raise UsageError(
            f"--sandbox {url}: this is not a runner sandbox (GET {STATS} {silence}); "
            "give the URL `runner sandbox` printed"
        )
    raise UsageError(
        f"--sandbox {url}: no sandbox answers there ({silence}); "
        f"start one with: {sandbox_command(url)}"
    )
