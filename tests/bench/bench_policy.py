"""Poll policy and learned limits, before vs after, side by side in one run.

Three cases of issue 12, each run by two versions of the runner against the same sandbox
scenario (a `runner sandbox` subprocess on 127.0.0.1, real time):

- S3 in-flight-bound: 100 Spidra scrapes of 2-8 s, Spidra's published cap of 10 pending
  scrapes (enforced by the sandbox), 20 requests/s declared and enforced. The ideal is the
  makespan 10 slots allow for the durations the sandbox drew (each scrape's `durationMs`).
- Lobstr: 20 runs of 20-40 s; Lobstr publishes no concurrency number (the sandbox enforces
  none here) but does publish its per-path request limits, which both versions keep.
- cpu: bench_engine's batch (2,000 jobs); the runner's CPU per job, before and after
  alternating `--repeat` times (compare the lowest of each: the machine is shared).
- store: the journal and the log alone, a job's life of 7 records each, in each tree.

"before" is the runner at BEFORE (the commit this work started from, extracted with `git
archive`), "after" is this working tree; each runs as `python -m runner run` in its own
process, so the CPU column is that process's (imports included). Prints a table; asserts
nothing (a benchmark is not a test).

    .venv/bin/python tests/bench/bench_policy.py [--only s3|lobstr|cpu|store] [--before REV]
        [--repeat N]   (CPU rounds, before and after alternating; compare the lowest)
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import re
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench import bench_engine  # noqa: E402

BEFORE = "729a664"  # main before issue 12's speed work: poll 5 s/10 s ×1.5, guessed caps


@dataclass(frozen=True)
class Case:
    name: str
    provider: str
    scenario: dict[str, Any]
    manifest: dict[str, Any]
    ideal: float  # seconds, from the limits and the mean duration
    ideal_note: str
    slots: int = 0  # the in-flight cap, when the ideal can come from the drawn durations


def s3() -> Case:
    jobs = 100
    return Case(
        "S3 spidra in-flight-bound",
        "spidra",
        {
            "providers": {
                "spidra": {
                    "rate_limit": {"requests": 20, "per": 1},
                    "pending_limits": True,
                    "duration": {"min": 2, "max": 8},
                    "results": {"min": 1, "max": 1},
                }
            }
        },
        {
            "version": 1,
            "name": "s3",
            "defaults": {"timeout": "10m"},
            "providers": {
                "spidra": {
                    "api_key": "${SPIDRA_API_KEY}",
                    "limits": {"requests": {"rate": 20, "per": "1s"}},
                }
            },
            "jobs": [
                {
                    "id": "s-{n}",
                    "provider": "spidra",
                    "type": "scrape",
                    "each": [f"site{i}" for i in range(jobs)],
                    "params": {"urls": [{"url": "https://{item}.example/"}], "output": "markdown"},
                }
            ],
        },
        jobs * 5.0 / 10,
        "100 × E[D] 5 s / 10 slots",
        slots=10,
    )


def lobstr() -> Case:
    jobs = 20
    return Case(
        "Lobstr 20 runs, no published cap",
        "lobstr",
        {"providers": {"lobstr": {"duration": {"min": 20, "max": 40}, "results": 1}}},
        {
            "version": 1,
            "name": "lobstr",
            "defaults": {"timeout": "15m"},
            "providers": {"lobstr": {"api_key": "${LOBSTR_API_KEY}"}},
            "jobs": [
                {
                    "id": "l-{n}",
                    "provider": "lobstr",
                    "type": "run",
                    "each": [f"city{i}" for i in range(jobs)],
                    "params": {
                        "crawler": "google-maps-search-export",
                        "params": {"language": "fr"},
                        "tasks": [{"url": "https://www.google.com/maps/search/cafes+{item}"}],
                    },
                }
            ],
        },
        40.0,
        "all 20 at once: the longest run, 40 s (the vendor SDK took 36.6 s)",
    )


def cpu() -> Case:
    """bench_engine's batch (2,000 Spidra + Pulse jobs of 0.5-2 s, 400 requests/s, 150 in
    flight each): what the runner's own CPU per job is, journal, log and files included."""
    with tempfile.TemporaryDirectory() as tmp:
        document = yaml.safe_load(bench_engine.manifest(Path(tmp), CPU_JOBS).read_text())
    return Case(f"CPU {CPU_JOBS} jobs (bench_engine)", "", bench_engine.SCENARIO, document, 0.0, "")


CPU_JOBS = 2000
CASES = {"s3": s3, "lobstr": lobstr, "cpu": cpu}

# The store alone, run inside each tree: a job's life in the journal (submit, its "sent"
# note, queued, running, a poll, finished, fetched) and the same in the log, on /tmp.
STORE = """
import sys, tempfile, time
from pathlib import Path
from runner.lifecycle import Event, JobRecord, advance
from runner.plan import JobSpec, Limits, Plan, PollPolicy, ProviderSettings, Secret
from runner.remote import RemoteRef, RemoteState, Status
from runner.store.journal import Journal
from runner.store.log import BatchLog, LogRecorder

n = int(sys.argv[1])
settings = ProviderSettings("spidra", "http://127.0.0.1:1", Secret("sk-bench-secret-key"),
    "SPIDRA_API_KEY", Limits(), PollPolicy(2.0, 60.0, 1.5), 1800.0)
jobs = tuple(JobSpec(f"job-{i:06d}", "spidra", "scrape", {}, index=i) for i in range(n))
plan = Plan("bench", Path("m.yaml"), b"", "0", {"spidra": settings}, jobs,
    secrets=(Secret("sk-bench-secret-key"),))
running = Status(RemoteState.RUNNING, raw="running", progress=0.5)
directory = Path(tempfile.mkdtemp())
journal = Journal.create(directory / "journal.sqlite", plan, "b")
log = BatchLog(directory / "log.jsonl", batch_id="b", secrets=list(plan.secrets))
recorder = LogRecorder(log)
spent = {"journal": 0.0, "log": 0.0}
for spec in jobs:
    job = JobRecord(spec=spec)
    for step in ("submit", "note", "queued", "running", "poll", "finished", "fetched"):
        if step == "queued":
            job.remote = RemoteRef("r-" + spec.id)
        if step == "note":
            job.notes["runner.sent"] = 1
        event = {"submit": Event.SUBMIT, "queued": Event.QUEUED, "running": Event.RUNNING,
                 "finished": Event.FINISHED, "fetched": Event.FETCHED}.get(step)
        previous = job.state
        if event is not None:
            job.state = advance(previous, event)
        for name, target in (("journal", journal), ("log", recorder)):
            start = time.process_time()
            if step == "note":
                target.noted(job, "runner.sent")
            elif step == "poll":
                job.polls = 1
                target.polled(job, running)
            else:
                target.transition(job, event, previous)
            spent[name] += time.process_time() - start
journal.close()
log.close()
print(f"{1e6 * spent['journal'] / n:.0f} {1e6 * spent['log'] / (7 * n):.1f}")
"""


def extract(rev: str, into: Path) -> Path:
    """The runner package as it was at `rev` (plus its schemas)."""
    archive = into / "before.tar"
    subprocess.run(
        ["git", "archive", "-o", str(archive), rev, "runner", "schemas"], cwd=ROOT, check=True
    )
    tree = into / "before"
    tree.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


@contextlib.contextmanager
def sandbox(directory: Path, scenario: dict[str, Any]) -> Iterator[dict[str, str]]:
    path = directory / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario))
    command = [sys.executable, "-m", "runner", "sandbox", "--port", "0", "--scenario", str(path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        yield dict(process.stdout.readline().split() for _ in range(5))
    finally:
        process.terminate()
        process.wait(timeout=10)


def books(origin: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{origin}/_sandbox/stats") as reply:
        found: dict[str, Any] = json.load(reply)["providers"]
    return found


def run(tree: Path, case: Case, directory: Path) -> dict[str, Any]:
    manifest = directory / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(case.manifest, sort_keys=False))
    with sandbox(directory, case.scenario) as urls:
        origin = urls["pulse"]  # every provider is mounted under the sandbox's origin
        env = {**os.environ, "PYTHONPATH": str(tree)}
        command = [sys.executable, "-m", "runner", "run", str(manifest), "--sandbox", origin]
        command += ["--out", str(directory / "results"), "--quiet"]
        fixed = child_cpu([sys.executable, "-m", "runner", "plan", str(manifest)], tree, env)
        wall0 = time.perf_counter()
        done, cpu = child_run(command, tree, env)
        wall = time.perf_counter() - wall0
        found = books(origin)
        shown = [found[case.provider]] if case.provider else list(found.values())
    return {
        "exit": done.returncode,
        "wall": wall,
        "cpu": cpu,
        "cpu_net": cpu - fixed,  # less what a `runner plan` of it costs (imports, manifest)
        "requests": sum(sum(b["requests"].values()) + b["downloads"] for b in shown),
        "throttled": sum(
            b["throttled"] + sum(b.get("endpoint_throttled", {}).values()) for b in shown
        ),
        "batch": batch_seconds(directory / "results"),
        "limits": learned(directory / "results"),
        "ideal": drawn_ideal(directory / "results", case.slots) if case.slots else None,
        "stderr": done.stderr.strip().splitlines()[-3:] if done.returncode else [],
    }


def child_run(
    command: list[str], tree: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `command` in `tree`; its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return done, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def child_cpu(command: list[str], tree: Path, env: dict[str, str]) -> float:
    return child_run(command, tree, env)[1]


def drawn_ideal(results: Path, slots: int) -> float | None:
    """The makespan the in-flight cap allows for the durations the sandbox actually drew
    (Spidra reports each scrape's `durationMs`): jobs in plan order, each started the moment
    a slot frees, no request or detection delay."""
    found: dict[int, float] = {}
    for status in results.glob("*/*/jobs/*/status.json"):
        match = re.search(r'"durationMs":\s*(\d+)', status.read_text())
        if match:
            found[int(status.parent.name.rsplit("-", 1)[1])] = int(match.group(1)) / 1000
    if not found:
        return None
    free = [0.0] * slots
    for _, seconds in sorted(found.items()):
        start = heapq.heappop(free)
        heapq.heappush(free, start + seconds)
    return max(free)


def batch_seconds(results: Path) -> float | None:
    """From the log's first line to its last: the batch without the interpreter's start."""
    for log in results.glob("*/*/log.jsonl"):
        lines = log.read_text().splitlines()
        first, last = (json.loads(lines[i])["timestamp"] for i in (0, -1))
        moments = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (first, last)]
        return (moments[1] - moments[0]).total_seconds()
    return None


def learned(results: Path) -> str:
    """The limits line of batch.finished in the log (absent before this work)."""
    for log in results.glob("*/*/log.jsonl"):
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event.get("event") == "batch.finished" and event.get("limits"):
                parts = []
                for provider, limits in event["limits"].items():
                    for name, value in limits.items():
                        shown = value.get("cap", value.get("rate_per_second"))
                        parts.append(f"{provider}.{name}={shown} ({value['origin']})")
                return ", ".join(parts)
    return "-"


def store(trees: dict[str, Path], rounds: int, jobs: int = 3000) -> None:
    """The journal's CPU per job and the log's per event, each tree in its own process,
    alternating `rounds` times; the lowest of each."""
    best: dict[str, tuple[float, float]] = {}
    for _ in range(rounds):
        for version, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": str(tree)}
            command = [sys.executable, "-c", STORE, str(jobs)]
            done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
            journal, log = (float(x) for x in done.stdout.split())
            seen = best.get(version, (journal, log))
            best[version] = (min(seen[0], journal), min(seen[1], log))
    for version, (journal, log) in best.items():
        print(
            f"{'store: journal, log (' + str(jobs) + ' jobs)':<34} {version:<7} "
            f"journal {journal:.0f} µs CPU per job (7 records), log {log:.1f} µs per event"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=[*sorted(CASES), "store"], action="append")
    parser.add_argument("--before", default=BEFORE)
    parser.add_argument(
        "--repeat", type=int, default=3, help="CPU rounds, before and after alternating"
    )
    args = parser.parse_args()
    print(f"poll policy and limits: before = {args.before}, after = this tree; real time")
    header = f"{'scenario':<34} {'version':<7} {'exit':>4} {'wall s':>7} {'vs ideal':>8} "
    print(header + f"{'requests':>8} {'429s':>5} {'CPU s':>6}  limits at the end")
    with tempfile.TemporaryDirectory(dir=bench_engine.scratch()) as tmp:
        scratch = Path(tmp)
        trees = {"before": extract(args.before, scratch), "after": ROOT}
        if "store" in (args.only or ["store"]):
            store(trees, args.repeat)
        for key in [k for k in args.only or list(CASES) if k != "store"]:
            case = CASES[key]()
            rounds = args.repeat if key == "cpu" else 1  # CPU is noisy on a shared machine
            order = [version for _ in range(rounds) for version in trees]
            for n, version in enumerate(order):
                tree = trees[version]
                where = scratch / f"{key}-{version}-{n}"
                where.mkdir()
                r = run(tree, case, where)
                ideal = r["ideal"] or case.ideal
                ratio = f"{r['wall'] / ideal:>7.2f}x" if ideal else f"{'-':>8}"
                extra = r["limits"]
                if not case.ideal:
                    startup = r["cpu"] - r["cpu_net"]
                    extra = (
                        f"{1000 * r['cpu_net'] / CPU_JOBS:.2f} ms CPU/job net of {startup:.2f} s "
                        f"start-up; {1000 * r['cpu_net'] / r['requests']:.3f} ms/request"
                    )
                print(
                    f"{case.name:<34} {version:<7} {r['exit']:>4} {r['wall']:>7.1f} {ratio} "
                    f"{r['requests']:>8} {r['throttled']:>5} {r['cpu']:>6.2f}  {extra}",
                    flush=True,
                )
                for line in r["stderr"]:
                    print(f"    {line}")
                if r["ideal"] and r["batch"]:
                    print(
                        f"{'':<34} ideal for the drawn durations: {r['ideal']:.1f} s; "
                        f"the batch (log's first to last line): {r['batch']:.1f} s = "
                        f"{r['batch'] / r['ideal']:.2f}x"
                    )
            if case.ideal:
                print(f"{'':<34} ideal ≈ {case.ideal:.0f} s: {case.ideal_note}")


if __name__ == "__main__":
    main()
