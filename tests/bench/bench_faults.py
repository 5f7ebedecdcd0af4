"""Load with faults: 3,000 jobs of all five providers against a `runner sandbox` subprocess
answering 5 % of requests with a 500 (half of them after the job was created), dropping 1 %
of connections and throttling Pulse at a fifth of its declared rate. Checks every job
against the sandbox's books (tests/e2e/fault_load.py) and prints the runner's peak RSS and
CPU per job. Run with `make bench`, or:

    .venv/bin/python tests/bench/bench_faults.py [JOBS]
"""

from __future__ import annotations

import io
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runner.batch.run import run_batch  # noqa: E402
from tests.e2e import fault_load  # noqa: E402


def main() -> int:
    jobs = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        path = fault_load.manifest(directory, jobs)
        command = [sys.executable, "-m", "runner", "sandbox", "--port", "0"]
        command += ["--scenario", str(directory / "scenario.yaml")]
        sandbox = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert sandbox.stdout is not None
            urls = dict(sandbox.stdout.readline().split() for _ in range(5))
            origin = urls["pulse"]  # Pulse is mounted at the origin
            cpu0, wall0 = time.process_time(), time.perf_counter()
            code = run_batch(
                path,
                out=directory / "results",
                sandbox=origin,
                env=fault_load.KEYS,
                stderr=io.StringIO(),
            )
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            books = httpx.get(f"{origin}/_sandbox/stats").json()["providers"]
        finally:
            sandbox.terminate()
            sandbox.wait(timeout=10)
        (batch,) = [p for p in (directory / "results").glob("*/*") if p.name != "latest"]
        result = fault_load.check(path, batch, books)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"faults: {result.jobs} jobs, exit {code}, {wall:.1f} s wall; states "
        f"{dict(sorted(result.states.items()))}"
    )
    print(
        f"  injected 5xx {result.injected}, dropped {result.dropped}, submits never arrived "
        f"{result.lost}, created then unanswered {result.unanswered}; 429s "
        f"{dict(result.throttled)}"
    )
    print(
        f"  submit_unknown {result.unknown} (of which never arrived "
        f"{result.unknown_never_arrived}); list requests {result.list_requests} for "
        f"{result.reconciles} Bulkgrid/Spidra jobs looked up (and Lobstr's)"
    )
    by = {kind: f"{result.unknown_by[kind]}/{n}" for kind, n in sorted(result.jobs_by.items())}
    print(f"  submit_unknown per job type (unknown/jobs): {by}")
    print(f"  runner peak RSS {rss_mb:.0f} MB, CPU {cpu:.1f} s = {1000 * cpu / jobs:.2f} ms/job")
    for problem in result.problems[:20]:
        print(f"  PROBLEM {problem}")
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
