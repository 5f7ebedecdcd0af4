"""Incremental runs: a manifest sent once, then run again with every job reused (no
request), then forced; against the sandbox over real sockets. Also the search alone.

A plain script (run by `make bench`): prints numbers, asserts nothing.
  .venv/bin/python tests/bench/bench_reuse.py [--jobs 500]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import httpx

from runner.batch.reuse import Policy, choose
from runner.batch.run import run_batch
from runner.manifest.loader import load_manifest
from runner.sandbox.app import create_app
from runner.sandbox.scenario import Scenario
from runner.sandbox.server import serve_in_thread
from tests.e2e.helpers import manifest, pulse_jobs

ENV = {"PULSE_API_KEY": "pulse_bench"}


def write_manifest(root: Path, jobs: int) -> Path:
    limits = {"requests": {"rate": 2000, "per": "1s"}, "in_flight": 500}
    providers = {"pulse": {"api_key": "${PULSE_API_KEY}", "limits": limits}}
    return manifest(root, [pulse_jobs(jobs)], providers=providers, timeout="5m", name="bench")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    jobs = parser.parse_args().jobs
    root = Path(tempfile.mkdtemp(prefix="bench-reuse-"))
    path = write_manifest(root, jobs)
    quick = Scenario.from_dict({"defaults": {"duration": {"min": 0.01, "max": 0.02}}})
    with serve_in_thread(create_app(scenario=quick)) as sandbox:
        runs = (("sent", Policy()), ("run again, all reused", Policy()), ("--force", Policy(True)))
        for label, policy in runs:
            start = time.perf_counter()
            code = run_batch(
                path,
                out=root / "results",
                sandbox=sandbox.origin,
                env=ENV,
                stderr=io.StringIO(),
                policy=policy,
                quiet=True,
            )
            elapsed = time.perf_counter() - start
            books = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]["pulse"]
            requests = sum(books["requests"].values())
            print(
                f"{jobs} jobs, {label:<22} exit {code}  {elapsed:7.2f} s  "
                f"({elapsed * 1e3 / jobs:6.2f} ms/job; sandbox requests so far {requests})"
            )
    plan = load_manifest(path, env=ENV).plan
    start = time.perf_counter()
    choices = choose(plan, root / "results", sandboxed=True)
    elapsed = time.perf_counter() - start
    reused = sum(c.reused for c in choices)
    print(f"{jobs} jobs, the search alone ({reused} found and verified)  {elapsed:7.2f} s")


if __name__ == "__main__":
    main()
