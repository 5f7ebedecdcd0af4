"""Cron outputs of `runner run`, `resume`, `retry`: `--json`, one summary on stdout, and
`--ping URL`, healthchecks-style pings (`URL/start`, then `URL` or `URL/fail` with the
summary as body). A ping that fails is one warning line: it never changes the exit code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx

from runner.batch.reuse import REUSED_FROM
from runner.errors import LockHeldError, ManifestError, RunnerError, StoreError, UsageError
from runner.exits import ExitCode
from runner.lifecycle import State
from runner.store.journal import Journal
from runner.store.jsonio import canonical_json
from runner.store.redaction import redact, redact_tree

PING_TIMEOUT = 5.0  # seconds per ping: a monitor that hangs must not hold the batch
MAX_LISTED = 100  # jobs that did not succeed, listed in the summary (the rest counted)
SUMMARY_VERSION = 1
_SECRET_VAR = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)

OnBatch = Callable[[Path, Sequence[str]], None]  # (batch directory, secrets to redact)


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables that look like credentials (as the CLI's crash file
    does): never in a summary or a ping body."""
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if _SECRET_VAR.search(k) and len(v) >= 4]


def exit_code_of(exc: BaseException) -> int:
    """The exit code runner.cli gives `exc` (the summary must say the same)."""
    if isinstance(exc, ManifestError | UsageError):
        return int(ExitCode.INVALID)
    if isinstance(exc, LockHeldError):
        return int(ExitCode.LOCKED)
    if isinstance(exc, KeyboardInterrupt):
        return int(ExitCode.SIGINT)
    if isinstance(exc, OSError) and exc.filename is not None and not isinstance(exc, StoreError):
        return int(ExitCode.INVALID)
    return int(ExitCode.INTERNAL)


def summarize(batch_path: Path | None, code: int, *, error: str | None = None) -> dict[str, Any]:
    """The summary: counts per state (reused jobs are among the succeeded; `reused` says
    how many), exit code, batch directory, and the jobs that did not succeed with their
    reasons (read from the journal, whose errors are redacted)."""
    document: dict[str, Any] = {
        "version": SUMMARY_VERSION,
        "exit_code": code,
        "ok": code == 0,
        "batch_dir": None if batch_path is None else str(batch_path),
        "name": None,
        "batch_id": None,
        "counts": {},
        "jobs": 0,
        "reused": 0,  # of the succeeded: taken from an earlier batch, nothing sent
        "not_succeeded": [],
        "not_succeeded_more": 0,
        "error": error,
    }
    if batch_path is None:
        return document
    document["name"], document["batch_id"] = batch_path.parent.name, batch_path.name
    try:
        journal = Journal.open(batch_path / "journal.sqlite", readonly=True)
    except RunnerError as exc:
        document["error"] = error or f"the journal cannot be read: {exc}"
        return document
    try:
        rows = journal.rows()
        document["counts"] = dict(sorted(journal.counts().items()))
    finally:
        journal.close()
    document["jobs"] = len(rows)
    document["reused"] = sum(1 for row in rows if row.notes.get(REUSED_FROM))
    others = [row for row in rows if row.state is not State.SUCCEEDED]
    document["not_succeeded"] = [
        {
            "id": row.job_id,
            "provider": row.provider,
            "type": row.type,
            "state": row.state.value,
            # ours when we have one, else the provider's reason or its last status
            "reason": row.error or row.reason or row.raw_status or "no reason given",
        }
        for row in others[:MAX_LISTED]
    ]
    document["not_succeeded_more"] = max(0, len(others) - MAX_LISTED)
    return document


def _shown(url: str) -> str:
    """The ping URL as printed: scheme and host only (a ping URL is a credential)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.netloc else "the ping URL"


@dataclass(slots=True)
class Pinger:
    """Healthchecks-style pings to `url`; each failure is one warning on `stderr`."""

    url: str
    stderr: TextIO
    timeout: float = PING_TIMEOUT
    transport: httpx.BaseTransport | None = None
    warned: list[str] = field(default_factory=list)

    def _send(self, suffix: str, body: bytes | None) -> None:
        target = self.url.rstrip("/") + suffix
        try:
            with httpx.Client(timeout=self.timeout, transport=self.transport) as client:
                reply = client.post(target, content=body or b"")
            problem = None if reply.status_code < 400 else f"HTTP {reply.status_code}"
        except httpx.TimeoutException:
            problem = f"no answer within {self.timeout:g}s"
        except (httpx.HTTPError, OSError, ValueError) as exc:
            problem = type(exc).__name__ if not str(exc) else str(exc)
        if problem is not None:
            line = (
                f"runner: warning: ping {suffix or '(success)'} to {_shown(self.url)} failed "
                f"({problem}); the batch's exit code is not affected"
            )
            self.warned.append(line)
            print(line, file=self.stderr)

    def start(self) -> None:
        self._send("/start", None)

    def finish(self, code: int, body: bytes) -> None:
        self._send("" if code == 0 else "/fail", body)


def check_ping_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--ping {url}: not an http(s) URL; give e.g. https://hc-ping.com/<uuid>")


def run_reported(
    run: Callable[[OnBatch], int],
    *,
    json_out: bool,
    ping: str | None,
    stdout: TextIO,
    stderr: TextIO,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """`run` (a `runner run` given a callback for its batch directory) with the summary on
    stdout (`json_out`) and pings around it. An exception still propagates (the CLI prints
    its line), after the summary and the failure ping."""
    if ping is not None:
        check_ping_url(ping)
    seen: dict[str, Any] = {"path": None, "secrets": []}

    def on_batch(path: Path, secrets: Sequence[str]) -> None:
        seen["path"], seen["secrets"] = path, list(secrets)

    pinger = Pinger(ping, stderr, transport=transport) if ping is not None else None
    if pinger is not None:
        pinger.start()
    failure: BaseException | None = None
    try:
        code = run(on_batch)
        error = None
    except BaseException as exc:  # reported, then re-raised for the CLI's one line
        failure = exc
        code = exit_code_of(exc)
        error = str(exc) or type(exc).__name__
    secrets = [*seen["secrets"], *env_secrets()]
    summary = redact_tree(summarize(seen["path"], code, error=error), secrets)
    body = canonical_json(summary)
    assert isinstance(summary, dict)
    if json_out:
        stdout.write(body.decode("utf-8"))
        stdout.flush()
    if pinger is not None:
        pinger.finish(code, redact(body.decode("utf-8"), secrets).encode("utf-8"))
    if failure is not None:
        raise failure
    return code
