"""A provider that echoes the API key everywhere it can: in error bodies, response headers,
status strings, final statuses and redirect `Location`s. `runner run` (a real subprocess,
real sockets) must write the key to no file, stdout, stderr or log. The one exception is a
result payload, the provider's data kept exactly as sent (see README)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CANARY = "pk-CANARY-5f0c9e1d77"


@dataclass
class EchoingPulse:
    """A Pulse API on a raw asyncio server that puts the request's x-api-key into every
    place a reply can carry text. Jobs are chosen by the submitted `file_url`."""

    port: int = 0
    submits: dict[str, int] = field(default_factory=dict)
    polls: dict[str, int] = field(default_factory=dict)
    seen_keys: set[str] = field(default_factory=set)

    def answer(
        self, method: str, target: str, key: str, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON body, extra headers) for one request."""
        self.seen_keys.add(key)
        origin = f"http://127.0.0.1:{self.port}"
        echo = {"x-echo-key": key, "ratelimit-policy": f'"{key}";q=100;w=1'}
        if method == "POST" and target == "/extract":
            doc = json.loads(body)["file_url"].rsplit("/", 1)[-1]
            count = self.submits[doc] = self.submits.get(doc, 0) + 1
            if doc == "throttled" and count == 1:
                return 429, {"error": f"slow down, {key}"}, {**echo, "retry-after": "0"}
            if doc == "refused":
                message = f"file_url not allowed for key {key}"
                return 400, {"error": {"code": "VAL_001", "message": message}}, echo
            return 200, {"job_id": f"job-{doc}", "status": "pending", "note": key}, echo
        if method == "GET" and target.startswith("/job/"):
            doc = target.removeprefix("/job/job-")
            count = self.polls[doc] = self.polls.get(doc, 0) + 1
            if count == 1:
                return 500, {"error": {"message": f"boom for {key}"}}, echo
            if count == 2:
                return 200, {"status": f"processing {key}", "message": key}, echo
            if doc == "throttled":
                return 200, {"status": "failed", "error": f"denied for {key}", "key": key}, echo
            if doc == "large":
                result = {"is_url": True, "url": f"{origin}/large/{key}"}
                return 200, {"status": "completed", "echo": key, "result": result}, echo
            result = {"markdown": f"a document that mentions {key}", "extraction_id": key}
            return 200, {"status": "completed", key: key, "result": result}, echo
        if method == "GET" and target.startswith("/large/"):
            location = f"{origin}/storage/{key}?token={key}"
            return 302, {"detail": f"moved for {key}"}, {**echo, "location": location}
        return 404, {"error": f"nothing here for {key} at {target}"}, echo

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    name.strip().lower(): value.strip()
                    for name, value in (line.split(":", 1) for line in lines[1:] if ":" in line)
                }
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, document, extra = self.answer(
                    method, target, headers.get("x-api-key", ""), body
                )
                payload = json.dumps(document).encode()
                reply = [f"HTTP/1.1 {status} X", "content-type: application/json"]
                reply += [f"{name}: {value}" for name, value in extra.items()]
                reply += [f"content-length: {len(payload)}", "", ""]
                writer.write("\r\n".join(reply).encode("latin-1") + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
def echoing_pulse() -> Iterator[EchoingPulse]:
    fake = EchoingPulse()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
        fake.port = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield fake
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def runner(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "runner", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_an_echoed_key_reaches_no_file_stream_or_log(
    tmp_path: Path, echoing_pulse: EchoingPulse
) -> None:
    docs = ["throttled", "refused", "large", "plain"]
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "name": "echo",
                "defaults": {"timeout": "60s", "poll": {"initial": "20ms", "max": "50ms"}},
                "providers": {
                    "pulse": {
                        "api_key": "${PULSE_API_KEY}",
                        "base_url": f"http://127.0.0.1:{echoing_pulse.port}",
                    }
                },
                "jobs": [
                    {
                        "id": "doc-{item}",
                        "provider": "pulse",
                        "type": "extract",
                        "each": docs,
                        "params": {"file_url": "https://files.example/{item}"},
                    }
                ],
            }
        )
    )
    env = {**os.environ, "PULSE_API_KEY": CANARY}
    out = tmp_path / "results"
    run = runner("run", str(manifest), "--out", str(out), env=env)
    batch = (out / "echo" / "latest").resolve()
    status = runner("status", str(batch), env=env)
    verify = runner("verify", str(batch), env=env)

    assert echoing_pulse.seen_keys == {CANARY}  # the fake really had the key to echo
    assert set(echoing_pulse.polls) == {"throttled", "large", "plain"}
    states = {
        p.name: json.loads((p / "job.json").read_text())["state"]
        for p in (batch / "jobs").iterdir()
    }
    assert states == {
        "doc-throttled": "failed",
        "doc-refused": "failed",
        "doc-large": "failed",
        "doc-plain": "succeeded",
    }
    assert (run.returncode, status.returncode, verify.returncode) == (1, 0, 0)

    # The one place the echo stays: the provider's result payload, kept as sent.
    payload = Path("jobs/doc-plain/result.json")
    assert CANARY in (batch / payload).read_text()
    hits = [
        path.relative_to(tmp_path).as_posix()
        for path in sorted(tmp_path.rglob("*"))
        if path.is_file()
        and path != manifest
        and path != batch / payload
        and CANARY.encode() in path.read_bytes()
    ]
    assert hits == []
    assert "results/echo" in (run.stdout + run.stderr)  # the streams said something
    for stream in (
        run.stdout,
        run.stderr,
        status.stdout,
        status.stderr,
        verify.stdout,
        verify.stderr,
    ):
        assert CANARY not in stream
