"""Engine benchmark: the runner's CPU time per HTTP request at 100+ jobs in flight.

A `runner sandbox` subprocess (pinned to CPU 1 when taskset exists) serves Spidra and Pulse
with generous limits and short jobs; this process (pinned to CPU 0) runs a batch of
BENCH_JOBS jobs through `run_batch` with each HTTP client of tests/bench/clients.py passed
as its `transport_factory`, and prints process CPU ÷ requests counted in the sandbox's
books. Run with `make bench`, or:

    .venv/bin/python tests/bench/bench_engine.py [JOBS] [CLIENT ...]
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runner.batch.run import run_batch  # noqa: E402
from tests.bench.clients import CLIENTS, available, factory  # noqa: E402
from tests.bench.processes import pinned, sandbox_process, scratch  # noqa: E402

SCENARIO = {
    "defaults": {"duration": {"min": 0.5, "max": 2.0}, "result_bytes": 800},
}
RATE = 400  # declared per provider; the sandbox enforces none


def manifest(directory: Path, jobs: int) -> Path:
    half = jobs // 2
    limits = {"requests": {"rate": RATE, "per": "1s"}, "in_flight": 150}
    document = {
        "version": 1,
        "name": "bench",
        "defaults": {"timeout": "5m", "poll": {"initial": "300ms", "max": "1s", "multiplier": 1.5}},
        "providers": {
            "spidra": {"api_key": "${SPIDRA_API_KEY}", "limits": limits},
            "pulse": {"api_key": "${PULSE_API_KEY}", "limits": limits},
        },
        "jobs": [
            {
                "id": "s-{n}",
                "provider": "spidra",
                "type": "scrape",
                "each": [f"site{i}" for i in range(half)],
                "params": {"urls": [{"url": "https://{item}.example/"}], "output": "markdown"},
            },
            {
                "id": "p-{n}",
                "provider": "pulse",
                "type": "extract",
                "each": [f"doc{i}" for i in range(jobs - half)],
                "params": {"file_url": "https://files.example/{item}.pdf"},
            },
        ],
    }
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@contextlib.contextmanager
def sandbox(directory: Path) -> Iterator[str]:
    scenario = directory / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    with sandbox_process(scenario) as origin:
        yield origin


def run_once(client: str, jobs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir=scratch()) as tmp:
        directory = Path(tmp)
        path = manifest(directory, jobs)
        with sandbox(directory) as origin:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            code = run_batch(
                path,
                out=directory / "results",
                sandbox=origin,
                env={},
                stderr=io.StringIO(),
                transport_factory=factory(client),
            )
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            books = httpx.get(f"{origin}/_sandbox/stats").json()["providers"]
    requests = sum(sum(b["requests"].values()) + b["downloads"] for b in books.values())
    throttled = sum(b["throttled"] for b in books.values())
    return {
        "exit": code,
        "requests": requests,
        "wall": wall,
        "cpu": cpu,
        "cpu_ms_per_request": 1000 * cpu / requests,
        "requests_per_job": requests / jobs,
        "throttled": throttled,
    }


def main() -> None:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    wanted = sys.argv[2:] or list(CLIENTS)
    if pinned(0):
        os.sched_setaffinity(0, {0})
    print(f"engine: {jobs} jobs (Spidra + Pulse), {RATE} req/s declared per provider, "
          "150 remote jobs in flight each; sandbox in a subprocess")  # fmt: skip
    header = f"{'client':<13} {'exit':>4} {'requests':>8} {'req/job':>7} {'wall s':>7} "
    print(header + f"{'CPU s':>6} {'CPU ms/req':>10} {'429s':>5}")
    for client in wanted:
        if client not in CLIENTS:
            sys.exit(f"unknown client {client!r} (use one of {', '.join(CLIENTS)})")
        if not available(client):
            print(f"{client:<13} skipped: not installed (pip install -e '.[bench]')")
            continue
        r = run_once(client, jobs)
        print(
            f"{client:<13} {r['exit']:>4.0f} {r['requests']:>8.0f} {r['requests_per_job']:>7.2f} "
            f"{r['wall']:>7.2f} {r['cpu']:>6.2f} {r['cpu_ms_per_request']:>10.3f} "
            f"{r['throttled']:>5.0f}"
        )


if __name__ == "__main__":
    main()
