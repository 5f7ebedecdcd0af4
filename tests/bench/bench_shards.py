"""Makespan of 1, 2 and 4 shard processes sharing one budget through a real redis-server, on a
rate-bound scenario (Bulkgrid extracts under a declared and enforced requests/s) and an
in-flight-bound one (Skop scrapes under a declared in-flight cap the sandbox enforces), with
the sandbox's books (busiest window, 429s, submits) beside each figure, and 4 shards without
the store as the control. Writes tests/bench/shards.json and prints a README section. Run
with `make bench`, or:

    .venv/bin/python tests/bench/bench_shards.py [--quick]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.e2e import shard_procs as procs  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

RATE = 20  # requests/s, declared and enforced
CAP = 4  # remote jobs in flight, declared and enforced (Skop max_active)
OUT = ROOT / "tests" / "bench" / "shards.json"


def _one(
    tmp: Path, scenario: dict[str, Any], manifest: Path, shards: int, store: str | None
) -> dict[str, Any]:
    """One makespan: from starting the shard processes to the last one's exit."""
    with procs.sandbox_process(tmp, scenario) as origin:
        started = time.perf_counter()
        results = procs.finish(procs.start_shards(manifest, origin, tmp / "out", shards, store))
        makespan = time.perf_counter() - started
        books = procs.books(origin)
    span = _span(tmp / "out")
    shutil.rmtree(tmp / "out", ignore_errors=True)
    entry = next(iter(v for v in books.values() if v["submits"]))
    posts = sum(n for route, n in entry["requests"].items() if route.startswith("POST"))
    return {
        "shards": shards,
        "shared_store": store is not None,
        "makespan_s": round(makespan, 2),
        "batch_span_s": round(span, 2),
        "exit_codes": sorted(code for code, _ in results.values()),
        "requests": sum(entry["requests"].values()),
        "max_window_requests": entry["max_window_requests"],
        "throttled_429": entry["throttled"],
        "submit_posts": posts,
        "jobs_submitted": len(entry["submits"]),
    }


def _span(out: Path) -> float:
    """First `batch.started` to last `batch.finished` over the shards' logs: the makespan
    without the processes' start-up (which a loaded 2-core machine makes long)."""
    starts, ends = [], []
    for log in out.glob("*/*/log.jsonl"):
        events = [json.loads(line) for line in log.read_text().splitlines()]
        stamps = {e["event"]: e["timestamp"] for e in events}
        starts.append(datetime.fromisoformat(stamps["batch.started"].replace("Z", "+00:00")))
        ends.append(datetime.fromisoformat(stamps["batch.finished"].replace("Z", "+00:00")))
    return (max(ends) - min(starts)).total_seconds()


def main() -> int:
    quick = "--quick" in sys.argv
    rate_jobs, flight_jobs = (16, 12) if quick else (40, 24)
    if shutil.which("redis-server") is None:
        print("bench_shards: redis-server is not installed (apt-get install redis-server)")
        return 1
    rows: dict[str, list[dict[str, Any]]] = {"rate_bound": [], "in_flight_bound": []}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        redis = RedisServer(free_port(), tmp)
        redis.start()
        try:
            rate_scenario = {
                "defaults": {"duration": {"min": 0.2, "max": 0.6}},
                "providers": {"bulkgrid": {"rate_limit": {"requests": RATE, "per": "1s"}}},
            }
            manifest = procs.rate_manifest(tmp, rate_jobs, RATE)
            for shards, store in ((1, redis.url), (2, redis.url), (4, redis.url), (4, None)):
                row = _one(tmp, rate_scenario, manifest, shards, store)
                rows["rate_bound"].append(row)
                print("rate-bound", row, flush=True)
            flight_scenario = {
                "defaults": {"duration": {"min": 1.0, "max": 1.5}},
                "providers": {"skop": {"max_active": CAP}},
            }
            manifest = procs.in_flight_manifest(tmp, flight_jobs, CAP)
            for shards, store in ((1, redis.url), (2, redis.url), (4, redis.url), (4, None)):
                row = _one(tmp, flight_scenario, manifest, shards, store)
                rows["in_flight_bound"].append(row)
                print("in-flight-bound", row, flush=True)
        finally:
            redis.stop()
    report = {
        "what": "makespan of N shard processes of one manifest against one sandbox process "
        "on this 2-core machine; the budget shared through a real redis-server",
        "rate_bound": {"jobs": rate_jobs, "declared_rate_per_s": RATE, "runs": rows["rate_bound"]},
        "in_flight_bound": {
            "jobs": flight_jobs,
            "declared_in_flight": CAP,
            "job_seconds": [1.0, 1.5],
            "runs": rows["in_flight_bound"],
        },
    }
    if not quick:
        OUT.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print()
    print(section(report))
    return 0


def section(report: dict[str, Any]) -> str:
    """The README lines for the lead to fold into Performance."""
    lines = [
        "**Shards** (`bench_shards.py`: N `runner run --shard K/N` processes, one sandbox "
        "process and one redis-server on this 2-core machine; makespan from start to the last "
        "exit, process start-up included; the batches' span is first start to last finish "
        "in their logs):",
        "",
        "| scenario | shards | store | makespan | batches' span | busiest window | 429s | "
        "submit POSTs / jobs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, title in (("rate_bound", "rate-bound"), ("in_flight_bound", "in-flight-bound")):
        block = report[key]
        for row in block["runs"]:
            store = "redis" if row["shared_store"] else "none"
            lines.append(
                f"| {title} ({block['jobs']} jobs) | {row['shards']} | {store} | "
                f"{row['makespan_s']:.1f} s | {row['batch_span_s']:.1f} s | "
                f"{row['max_window_requests']} | "
                f"{row['throttled_429']} | {row['submit_posts']} / {row['jobs_submitted']} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
