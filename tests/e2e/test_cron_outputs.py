"""`runner run --json` and `--ping URL` end to end: the batch against the sandbox over real
sockets, the pings to a tiny HTTP server on 127.0.0.1 that records what it is sent. The
summary is the only thing on stdout; a ping that fails (refused, 5xx, no answer) is one
warning line and never changes the exit code; no key ever reaches a ping body."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runner.batch.notify import Pinger, run_reported
from runner.cli import main
from runner.errors import UsageError
from tests.conftest import MakeSandbox
from tests.e2e.helpers import manifest, pulse_jobs

pytestmark = pytest.mark.e2e

PROVIDERS = {"pulse": {"api_key": "${PULSE_API_KEY}"}}
KEY = "pulse-secret-key-0123456789"


@dataclass
class Monitor:
    """A healthchecks-like receiver: every request's method, path and body, in order."""

    status: int = 200
    delay: float = 0.0
    received: list[tuple[str, str, bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    state = Monitor()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            state.received.append(("POST", self.path, body))
            if state.delay:
                time.sleep(state.delay)
            self.send_response(state.status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/ping/0f1e2d3c"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def refused_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (the port was just free)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/ping/abc"


def run_cli(
    capsys: pytest.CaptureFixture[str], path: Path, origin: str, out: Path, *extra: str
) -> tuple[int, str, str]:
    code = main(["run", str(path), "--sandbox", origin, "--out", str(out), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_json_prints_one_summary_and_pings_start_then_success(
    tmp_path: Path,
    make_sandbox: MakeSandbox,
    monitor: Monitor,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_API_KEY", KEY)
    sandbox = make_sandbox()
    path = manifest(tmp_path, [pulse_jobs(3)], providers=PROVIDERS)

    code, out, err = run_cli(
        capsys, path, sandbox.origin, tmp_path / "results", "--json", "--ping", monitor.url
    )

    assert code == 0, err
    summary = json.loads(out)  # the whole of stdout is one JSON document
    batch = next(p for p in (tmp_path / "results" / "e2e").iterdir() if p.name != "latest")
    assert summary == {
        "batch_dir": str(batch),
        "batch_id": batch.name,
        "counts": {"succeeded": 3},
        "error": None,
        "exit_code": 0,
        "jobs": 3,
        "name": "e2e",
        "not_succeeded": [],
        "not_succeeded_more": 0,
        "ok": True,
        "reused": 0,
        "version": 1,
    }
    assert [(m, p) for m, p, _ in monitor.received] == [
        ("POST", "/ping/0f1e2d3c/start"),
        ("POST", "/ping/0f1e2d3c"),
    ]
    assert json.loads(monitor.received[1][2]) == summary
    assert "warning" not in err


def test_a_failed_batch_pings_fail_with_the_failed_jobs_and_their_reasons(
    tmp_path: Path,
    make_sandbox: MakeSandbox,
    monitor: Monitor,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_API_KEY", KEY)
    sandbox = make_sandbox(scenario={"defaults": {"fail_rate": 1.0}})
    path = manifest(tmp_path, [pulse_jobs(2)], providers=PROVIDERS)

    code, out, _ = run_cli(
        capsys, path, sandbox.origin, tmp_path / "results", "--json", "--ping", monitor.url
    )

    assert code == 1
    summary = json.loads(out)
    assert summary["exit_code"] == 1
    assert summary["counts"] == {"failed": 2}
    assert [(j["id"], j["state"], j["provider"]) for j in summary["not_succeeded"]] == [
        ("p-1", "failed", "pulse"),
        ("p-2", "failed", "pulse"),
    ]
    assert all(j["reason"] and j["type"] == "extract" for j in summary["not_succeeded"])
    assert [p for _, p, _ in monitor.received] == ["/ping/0f1e2d3c/start", "/ping/0f1e2d3c/fail"]
    body = monitor.received[1][2]
    assert json.loads(body) == summary
    assert KEY.encode() not in body


def test_an_invalid_manifest_still_gives_a_summary_and_a_fail_ping(
    tmp_path: Path, monitor: Monitor, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("version: 1\nname: broken\njobs: []\n")

    code = main(["run", str(path), "--sandbox", "--json", "--ping", monitor.url])
    captured = capsys.readouterr()

    assert code == 2
    summary = json.loads(captured.out)
    assert (summary["exit_code"], summary["batch_dir"], summary["ok"]) == (2, None, False)
    assert "jobs: must not be empty (at least 1 item)" in summary["error"]
    assert "1 problem; nothing was sent" in captured.err  # the CLI's own lines, on stderr
    assert [p for _, p, _ in monitor.received] == ["/ping/0f1e2d3c/start", "/ping/0f1e2d3c/fail"]


def test_a_refused_ping_is_one_warning_and_never_changes_the_exit_code(
    tmp_path: Path,
    make_sandbox: MakeSandbox,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULSE_API_KEY", KEY)
    sandbox = make_sandbox()
    path = manifest(tmp_path, [pulse_jobs(1)], providers=PROVIDERS)
    url = refused_url()

    code, out, err = run_cli(capsys, path, sandbox.origin, tmp_path / "results", "--ping", url)

    assert code == 0
    assert out == ""  # no --json: nothing on stdout
    warnings = [line for line in err.splitlines() if "warning: ping" in line]
    host = url.split("/ping")[0]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"runner: warning: ping /start to {host}/… failed (")
    assert warnings[1].startswith(f"runner: warning: ping (success) to {host}/… failed (")
    assert all(w.endswith("); the batch's exit code is not affected") for w in warnings)
    assert "/ping/abc" not in err  # the ping URL is a credential: only its host is shown


def test_a_5xx_or_a_silent_monitor_is_a_warning(monitor: Monitor) -> None:
    stderr = io.StringIO()
    monitor.status = 503
    Pinger(monitor.url, stderr).start()
    monitor.status, monitor.delay = 200, 1.0
    Pinger(monitor.url, stderr, timeout=0.2).finish(1, b"{}")

    lines = stderr.getvalue().splitlines()
    assert lines[0].startswith("runner: warning: ping /start to http://127.0.0.1:")
    assert lines[0].endswith("failed (HTTP 503); the batch's exit code is not affected")
    assert lines[1].endswith(
        "failed (no answer within 0.2s); the batch's exit code is not affected"
    )
    assert [p for _, p, _ in monitor.received] == ["/ping/0f1e2d3c/start", "/ping/0f1e2d3c/fail"]


def test_no_key_reaches_the_summary_or_the_ping_body(
    monitor: Monitor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOME_API_KEY", "env-secret-abcdef")

    def run(on_batch: Any) -> int:
        raise UsageError(f"a provider said: bad key {KEY}, env-secret-abcdef")

    out = io.StringIO()
    with pytest.raises(UsageError):
        run_reported(
            run,
            json_out=True,
            ping=monitor.url,
            stdout=out,
            stderr=io.StringIO(),
        )
    # The key came with no batch (run failed first): the env scan still catches its twin.
    body = monitor.received[-1][2].decode()
    assert "env-secret-abcdef" not in body
    assert "env-secret-abcdef" not in out.getvalue()
    assert json.loads(out.getvalue())["error"].endswith("***")

    def run_with_batch(on_batch: Any) -> int:
        on_batch(Path("/nonexistent/batch"), [KEY])
        raise UsageError(f"bad key {KEY}")

    out = io.StringIO()
    with pytest.raises(UsageError):
        run_reported(
            run_with_batch, json_out=True, ping=monitor.url, stdout=out, stderr=io.StringIO()
        )
    assert KEY not in out.getvalue()
    assert KEY.encode() not in monitor.received[-1][2]
    assert json.loads(out.getvalue())["error"] == "bad key ***"
