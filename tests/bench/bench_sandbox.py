"""Sandbox throughput: status polls per second served on one core.

A plain script (run by `make bench`): prints numbers, asserts nothing. The sandbox runs in a
subprocess pinned to core 1 (`taskset`, when available) with each HTTP implementation that is
installed (h11 always, httptools when present); a raw asyncio keep-alive client on core 0
submits jobs, then polls them for a fixed time over many connections.
  .venv/bin/python tests/bench/bench_sandbox.py [--seconds 3] [--connections 32] [--jobs 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time

_CONTENT_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)
# Jobs that stay running for the whole measurement: every poll is a live status answer.
_SCENARIO = {"defaults": {"duration": {"min": 3600, "max": 3600}}}
_SERVER = """
import json, sys
import uvicorn
from runner.sandbox.app import create_app
from runner.sandbox.scenario import Scenario
from runner.sandbox.server import bind, origin_for
sock = bind("127.0.0.1", 0)
print(origin_for(sock), flush=True)
app = create_app(seed=1, scenario=Scenario.from_dict(json.loads(sys.argv[2])))
try:
    import uvloop  # noqa: F401
    loop = "uvloop" if sys.argv[1] == "httptools" else "asyncio"
except ImportError:
    loop = "asyncio"
config = uvicorn.Config(app, http=sys.argv[1], loop=loop, log_level="warning", access_log=False,
                        lifespan="off")
uvicorn.Server(config).run(sockets=[sock])
"""


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: bytes = b""
) -> bytes:
    writer.write(head + body)
    header = await reader.readuntil(b"\r\n\r\n")
    match = _CONTENT_LENGTH.search(header)
    return await reader.readexactly(int(match.group(1)) if match else 0)


def _get(host: str, path: str, key_header: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{key_header}\r\n\r\n".encode()


async def _submit(host: str, port: int, jobs: int) -> list[tuple[str, bytes]]:
    """Create `jobs` Spidra scrapes and Pulse extracts; return their poll requests."""
    reader, writer = await asyncio.open_connection(host, port)
    authority = f"{host}:{port}"
    polls = []
    for i in range(jobs):
        if i % 2:
            body = json.dumps({"file_url": f"https://f.example/{i}.pdf", "async": True}).encode()
            path, key, field = "/extract", "x-api-key: k", "job_id"
            poll = "/job/{}"
        else:
            body = json.dumps({"urls": [{"url": f"https://a.example/{i}"}]}).encode()
            path, key, field = "/api/scrape", "Authorization: Bearer k", "jobId"
            poll = "/api/scrape/{}"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {authority}\r\n{key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        job_id = json.loads(await _request(reader, writer, head, body))[field]
        polls.append((poll.split("/")[1], _get(authority, poll.format(job_id), key)))
    writer.close()
    return polls


async def _poller(
    host: str, port: int, requests: list[bytes], deadline: float, counts: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    n = 0
    while time.perf_counter() < deadline:
        await _request(reader, writer, requests[n % len(requests)])
        n += 1
    counts.append(n)
    writer.close()


async def _measure(origin: str, args: argparse.Namespace) -> tuple[float, float]:
    host, port = origin.removeprefix("http://").rsplit(":", 1)
    polls = await _submit(host, int(port), args.jobs)
    requests = [request for _, request in polls]
    cpu0 = time.process_time()
    start = time.perf_counter()
    counts: list[int] = []
    deadline = start + args.seconds
    await asyncio.gather(
        *(
            _poller(host, int(port), requests[i :: args.connections], deadline, counts)
            for i in range(args.connections)
        )
    )
    elapsed = time.perf_counter() - start
    return sum(counts) / elapsed, (time.process_time() - cpu0) / elapsed


def _server_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(http: str, args: argparse.Namespace) -> None:
    prefix = ["taskset", "-c", "1"] if shutil.which("taskset") and os.cpu_count() != 1 else []
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-c", _SERVER, http, json.dumps(_SCENARIO)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        origin = proc.stdout.readline().strip()
        if prefix:
            os.sched_setaffinity(0, {0})
        time.sleep(0.3)  # let uvicorn start accepting (connections queue in the backlog anyway)
        cpu_before = _server_cpu(proc.pid)
        wall = time.perf_counter()
        rate, client_cpu = asyncio.run(_measure(origin, args))
        server_cpu = (_server_cpu(proc.pid) - cpu_before) / (time.perf_counter() - wall)
        pinned = "pinned to core 1" if prefix else "not pinned"
        print(
            f"sandbox http={http:<9} {rate:8.0f} status polls/s  "
            f"(server CPU {server_cpu:.0%} of one core, {pinned}; client CPU {client_cpu:.0%}; "
            f"{args.connections} connections, {args.jobs} jobs, {args.seconds:g} s)"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if prefix:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    implementations = ["h11"]
    try:
        import httptools  # noqa: F401

        implementations.append("httptools")
    except ImportError:
        print("httptools not installed: measuring h11 only (pip install 'uvicorn[standard]')")
    for http in implementations:
        _run(http, args)


if __name__ == "__main__":
    main()
