"""`runner report` at scale: a synthesized 100,000-job batch (5 providers, 2 hours, polls,
load samples, 429 pauses, an outage, 6 % failures) → report.html; generation time, file
size, and how long headless Chromium takes to load and lay it out.

A plain script (run by `make bench`): prints numbers, writes tests/bench/report_bench.json,
asserts nothing.
  .venv/bin/python tests/bench/bench_report_html.py [--jobs 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.plan import JobSpec, Limits, Plan, PollPolicy, ProviderSettings, Rate, Secret
from runner.report.page import REPORT
from runner.store.journal import Journal

PROVIDERS = ("bulkgrid", "lobstr", "spidra", "skop", "pulse")
SPAN = 7200.0  # seconds the batch ran
START = datetime(2026, 11, 22, 3, 0, tzinfo=UTC).timestamp()
REASONS = (
    "Failed to process document: unreadable scan",
    "ProviderResponseError: malformed status (HTTP 200): {'state': ...}",
    "timed out after 30m",
    "blocked by target site (403)",
)
OUT = Path(__file__).with_name("report_bench.json")
# The child that runs `runner report DIR` and prints its CPU seconds and peak RSS (kB).
CHILD = """
import resource, sys
from runner.cli import main
code = main(["report", sys.argv[1]])
usage = resource.getrusage(resource.RUSAGE_SELF)
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec (the forking parent's peak)
with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
print(usage.ru_utime + usage.ru_stime, peak)
sys.exit(code)
"""


def make_plan(n: int) -> Plan:
    manifest = b"version: 1\nname: bench-report\n"
    settings = {
        name: ProviderSettings(
            name=name,
            base_url="http://127.0.0.1:1",
            api_key=Secret(f"sk-{name}-bench"),
            api_key_var=None,
            limits=Limits(requests=Rate(20.0, 1.0), in_flight=200),
            poll=PollPolicy(5.0, 60.0, 1.5),
            timeout=1800.0,
        )
        for name in PROVIDERS
    }
    jobs = tuple(
        JobSpec(id=f"job-{i:06d}", provider=PROVIDERS[i % 5], type="scrape", params={}, index=i)
        for i in range(n)
    )
    return Plan(
        name="bench-report",
        source=Path("bench.yaml"),
        manifest_bytes=manifest,
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
        providers=settings,
        jobs=jobs,
        secrets=(),
    )


def stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def synthesize(batch: Path, n: int, rng: random.Random) -> dict[str, int]:
    """journal.sqlite, log.jsonl, batch.json and manifest.yaml of a finished batch."""
    batch.mkdir(parents=True)
    (batch / "manifest.yaml").write_text("version: 1\nname: bench-report\n")
    plan = make_plan(n)
    Journal.create(batch / "journal.sqlite", plan, batch.name).close()
    events: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    lines: list[str] = []

    def log(moment: float, event: str, **fields: Any) -> None:
        entry = {"batch_id": batch.name, "event": event, "timestamp": stamp(moment), **fields}
        lines.append(json.dumps(entry, sort_keys=True, ensure_ascii=False))

    log(START, "batch.started", name="bench-report", jobs=n)
    for name in PROVIDERS:
        limits = {"rate": 20, "per": 1.0, "burst": 1}
        log(START, "provider.limits", provider=name, requests=limits, endpoints={}, in_flight=200)
    log(START, "batch.estimate", expected_seconds=6500.0, limits_only_seconds=6000.0, providers={})
    polls = 0
    for spec in plan.jobs:
        submitted = START + rng.uniform(0, SPAN * 0.85)
        ended = submitted + rng.uniform(30, 600)
        fetching = ended - rng.uniform(0.5, 5)
        roll = rng.random()
        state = "succeeded" if roll > 0.06 else ("failed" if roll > 0.01 else "timed_out")
        error = None if state == "succeeded" else rng.choice(REASONS)
        ids = spec.id
        who = {"job_id": ids, "provider": spec.provider}
        events.append((submitted, ids, "submit", "planned", "submitting", "{}"))
        events.append((submitted + 0.2, ids, "observed_queued", "submitting", "queued", "{}"))
        log(submitted, "job.submitting", **who, state="submitting")
        log(submitted + 0.2, "job.submitted", **who, state="queued", remote_id=f"r-{ids}")
        moment = submitted + 5
        count = 0
        while moment < ended:
            count += 1
            log(moment, "job.polled", **who, polls=count, raw_status="running")
            moment += min(60.0, 5 * 1.5**count)
        polls += count
        if state == "succeeded":
            events.append((fetching, ids, "observed_finished", "running", "fetching", "{}"))
            events.append((ended, ids, "fetched", "fetching", "succeeded", "{}"))
        else:
            events.append((ended, ids, "observed_failed", "running", state, "{}"))
        log(ended, f"job.{state}", **who, state=state, **({"error": error} if error else {}))
        updates.append((state, submitted, ended, error, count, ids))
    for name in PROVIDERS:
        sent = 0
        for second in range(int(SPAN)):
            sent += rng.randint(14, 19)
            log(
                START + second,
                "provider.load",
                provider=name,
                sent=sent,
                throttled=0,
                in_flight=rng.randint(150, 200),
                cap=200,
                paced=19.0,
            )
        for k in range(6):
            log(
                START + 600 * (k + 1),
                "provider.paused",
                provider=name,
                seconds=2.0,
                reason="rate limited (429, Retry-After 2s)",
            )
    since = START + 3000
    log(
        since + 1,
        "provider.unreachable",
        provider="skop",
        since=stamp(since),
        reason="connection refused",
        message="skop unreachable since ... (connection refused)",
    )
    log(
        since + 95,
        "provider.reachable",
        provider="skop",
        down_seconds=95.0,
        message="skop reachable again after 1m35s",
    )
    log(START + SPAN, "batch.finished", exit_code=1)
    with Journal.open(batch / "journal.sqlite") as journal:
        conn = journal._conn  # a benchmark fixture: one bulk transaction, not 400k commits
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events (time, job_id, event, from_state, to_state, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            sorted(events),
        )
        conn.executemany(
            "UPDATE jobs SET state = ?, submitted_at = ?, finished_at = ?, error = ?, polls = ? "
            "WHERE job_id = ?",
            updates,
        )
        conn.execute("COMMIT")
    (batch / "log.jsonl").write_text("\n".join(lines) + "\n")
    info = {
        "batch_id": batch.name,
        "name": "bench-report",
        "started": stamp(START),
        "ended": stamp(START + SPAN),
        "exit_code": 1,
    }
    (batch / "batch.json").write_text(json.dumps(info))
    return {"log_lines": len(lines), "events": len(events), "polls": polls}


def chromium_seconds(page: Path, profile: Path, *extra: str) -> float | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        return None
    command = [
        found,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *extra,
        page.as_uri(),
    ]
    began = time.perf_counter()
    subprocess.run(command, capture_output=True, timeout=300, check=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, default=None, help="leave the batch here")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-report-"))
    try:
        batch = (args.keep or root) / "bench-report" / "20261122T030000Z"
        began = time.perf_counter()
        sizes = synthesize(batch, args.jobs, random.Random(7))
        made = time.perf_counter() - began
        # `runner report` as a user runs it, in its own process: wall, CPU and peak memory.
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(batch)], check=True, capture_output=True, text=True
        )
        seconds = time.perf_counter() - began
        cpu, peak_kb = (float(v) for v in done.stdout.split())
        out = batch / REPORT
        size = out.stat().st_size
        blank = root / "blank.html"
        blank.write_text("<!DOCTYPE html><html><body>x</body></html>")
        profile = root / "profile"
        chromium_blank = chromium_seconds(blank, profile, "--dump-dom")
        dump = chromium_seconds(out, profile, "--dump-dom")
        shot = chromium_seconds(
            out, profile, f"--screenshot={root / 'shot.png'}", "--window-size=1200,4000"
        )
        result = {
            "jobs": args.jobs,
            "providers": len(PROVIDERS),
            "synthesized": {**sizes, "log_bytes": (batch / "log.jsonl").stat().st_size},
            "generate_seconds": round(seconds, 2),
            "generate_cpu_seconds": round(cpu, 2),
            "report_bytes": size,
            "report_max_rss_mb": round(peak_kb / 1024, 1),
            "chromium_blank_page_seconds": chromium_blank and round(chromium_blank, 2),
            "chromium_dump_dom_seconds": dump and round(dump, 2),
            "chromium_screenshot_seconds": shot and round(shot, 2),
            "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        print(f"synthesized {args.jobs} jobs in {made:.1f}s: {sizes}")
        print(
            f"report.html: {size / 1e3:.0f} kB in {seconds:.2f}s ({cpu:.2f}s CPU; "
            f"max RSS {result['report_max_rss_mb']} MB)"
        )
        print(
            f"chromium: blank page {chromium_blank}s, --dump-dom {dump}s, --screenshot {shot}s"
            if dump is not None
            else "chromium: not installed, render not measured"
        )
        OUT.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
