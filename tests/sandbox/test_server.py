"""Serving: serve_in_thread over real sockets, dropped connections, the `runner sandbox` CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest

from runner.sandbox.server import sandbox_base_urls
from tests.conftest import MakeSandbox


def test_base_urls() -> None:
    assert sandbox_base_urls("http://127.0.0.1:9/") == {
        "bulkgrid": "http://127.0.0.1:9",
        "lobstr": "http://127.0.0.1:9/v1",
        "spidra": "http://127.0.0.1:9/api",
        "skop": "http://127.0.0.1:9",
        "pulse": "http://127.0.0.1:9",
    }


def test_dropped_connection_over_socket(make_sandbox: MakeSandbox) -> None:
    scenario = {
        "providers": {
            "spidra": {"drop_connection_rate": 1.0, "drop_after_accept": False},
            "pulse": {"drop_connection_rate": 1.0},
        }
    }
    sb = make_sandbox(scenario=scenario)
    body = {"urls": [{"url": "https://a.example"}]}
    # An aborted socket reads as a clean EOF or as a reset, depending on timing: both are
    # "the connection dropped without an answer".
    dropped = (httpx.RemoteProtocolError, httpx.ReadError)
    with pytest.raises(dropped):
        httpx.post(sb.base_urls["spidra"] + "/scrape", json=body, headers={"x-api-key": "k"})
    with pytest.raises(dropped):
        httpx.post(
            sb.base_urls["pulse"] + "/extract",
            json={"file_url": "https://f/a.pdf"},
            headers={"x-api-key": "k"},
        )
    books = httpx.get(sb.origin + "/_sandbox/stats").json()["providers"]
    assert (books["spidra"]["dropped"], books["spidra"]["submits"]) == (1, {})  # before accept
    assert (books["pulse"]["dropped"], len(books["pulse"]["submits"])) == (1, 1)  # after accept


def test_serve_in_thread_stops_cleanly() -> None:
    from runner.sandbox.app import create_app
    from runner.sandbox.server import serve_in_thread

    with serve_in_thread(create_app()) as sb:
        origin = sb.origin
        assert httpx.get(origin + "/_sandbox/stats").status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(origin + "/_sandbox/stats")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_prints_base_urls_and_exits_zero_on_signal(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "sandbox", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().rstrip("\n") for _ in range(5)]
        names = [line.split()[0] for line in lines]
        assert names == ["bulkgrid", "lobstr", "spidra", "skop", "pulse"]
        urls = dict(line.split() for line in lines)
        assert urls["spidra"].endswith("/api")
        assert urls["lobstr"].endswith("/v1")
        reply = httpx.get(urls["pulse"] + "/job/nope", headers={"x-api-key": "k"})
        assert reply.status_code == 404
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_bad_scenario_is_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "runner", "sandbox", "--scenario", "/nonexistent/s.yaml"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "runner: cannot read scenario /nonexistent/s.yaml: No such file or directory\n"
    )
