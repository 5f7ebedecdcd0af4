"""`make bench`'s report: scenarios S1-S4 against their ideal and two baselines, the scaling
curve and a profile of S1; writes tests/bench/report.json and tests/bench/REPORT.md and
prints the latter. A benchmark, not a test: it never fails on a missed target, it says so.

Each run gets a fresh `runner sandbox` subprocess (pinned to CPU 1 where taskset exists);
runner runs as `runner run M --sandbox URL` in its own subprocess (pinned to CPU 0), whose
CPU time and peak RSS come from wait4(); the baselines (tests/bench/baselines.py) likewise.
The sandbox reports the durations it drew (`GET /_sandbox/jobs`), from which
tests/bench/ideal.py computes the ideal. BENCH_QUICK=1 runs smaller sizes;
BENCH_SCALE_MAX caps the scaling curve; BENCH_ONLY=S3,S4 runs some scenarios only
(then report.json keeps the other entries it had).

    .venv/bin/python tests/bench/bench_report.py [--render]

`--render` only writes REPORT.md and the README's quote again from report.json.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from runner.manifest.loader import load_manifest  # noqa: E402
from runner.plan import Limits, Rate  # noqa: E402
from runner.providers.registry import PROVIDERS  # noqa: E402
from tests.bench import scenarios as sc  # noqa: E402
from tests.bench.ideal import lane_for, lane_ideal, minimum_requests  # noqa: E402
from tests.bench.processes import pinned, sandbox_process, scratch  # noqa: E402

HERE = Path(__file__).resolve().parent
REPORT_JSON = HERE / "report.json"
REPORT_MD = HERE / "REPORT.md"
PROFILE = HERE / "profile-S1.txt"
PROFILE_JOBS = int(os.environ.get("BENCH_PROFILE_JOBS", "2000"))
SERIAL_BUDGET = 30.0  # wall seconds of one-at-a-time sampling
# A scaling point runs only if the previous point's CPU x the size ratio stays below this
# (CPU seconds): the curve's largest point must not turn `make bench` into an hour.
SCALE_CPU_BUDGET = float(os.environ.get("BENCH_SCALE_CPU_BUDGET", "300"))


# -- files the runs read ---------------------------------------------------------------------


def _per(seconds: float) -> str:
    return f"{seconds * 1000:.3f}ms".replace(".000ms", "ms")


def _rate(rate: Rate, scale: float) -> dict[str, Any]:
    return {"rate": rate.rate, "per": _per(rate.per / scale)}


def declared_limits(limits: Limits, scale: float) -> dict[str, Any]:
    block: dict[str, Any] = {}
    if limits.requests is not None:
        block["requests"] = _rate(limits.requests, scale)
    for endpoint, rate in limits.endpoints.items():
        block[endpoint] = _rate(rate, scale)
    if limits.in_flight is not None:
        block["in_flight"] = limits.in_flight
    return block


def manifest_for(spec: sc.Spec, scale: float) -> dict[str, Any]:
    providers: dict[str, Any] = {}
    jobs: list[dict[str, Any]] = []
    for share in spec.shares:
        name = share.provider
        info = PROVIDERS[name]
        block: dict[str, Any] = {"api_key": "${" + info.api_key_env + "}"}
        if share.declared is not None:
            block["limits"] = declared_limits(share.declared, scale)
        if scale != 1.0:
            poll = info.default_poll
            block["poll"] = {
                "initial": _per(poll.initial / scale),
                "max": _per(poll.max / scale),
                "multiplier": poll.multiplier,
            }
        providers[name] = block
        kind, params, fetch = sc.JOB_TYPES[name]
        entry: dict[str, Any] = {
            "id": f"{name}-{{n}}",
            "provider": name,
            "type": kind,
            "each": [f"{spec.key.lower()}-{name}-{i}" for i in range(share.jobs)],
            "params": params,
        }
        if fetch:
            entry["fetch"] = fetch
        jobs.append(entry)
    return {
        "version": 1,
        "name": f"bench-{spec.key.lower()}",
        "defaults": {"timeout": "2h"},
        "providers": providers,
        "jobs": jobs,
    }


def sandbox_scenario(spec: sc.Spec) -> dict[str, Any]:
    """Unscaled knobs; `runner sandbox --time-scale` speeds them up."""
    providers: dict[str, Any] = {}
    for share in spec.shares:
        knobs: dict[str, Any] = {
            "duration": {"min": share.duration[0], "max": share.duration[1]},
            "results": {"min": 1, "max": 3},
            "result_bytes": 400,
            **share.sandbox_extra,
        }
        rate = share.real.requests
        if share.enforce_rate and rate is not None:
            knobs["rate_limit"] = {"requests": int(rate.rate), "per": rate.per}
        if share.real.in_flight is not None:
            knobs["hidden_in_flight"] = share.real.in_flight
        providers[share.provider] = knobs
    return {"providers": providers}


# -- processes -------------------------------------------------------------------------------


@contextlib.contextmanager
def sandbox(directory: Path, spec: sc.Spec, scale: float, tag: str) -> Iterator[str]:
    scenario = directory / f"scenario-{tag}.yaml"
    scenario.write_text(yaml.safe_dump(sandbox_scenario(spec)))
    with sandbox_process(scenario, "--time-scale", str(scale)) as origin:
        yield origin


@dataclass
class Measured:
    exit: int
    wall: float
    cpu: float
    peak_rss_mb: float
    stdout: str
    timed_out: bool


def measure(command: list[str], timeout: float) -> Measured:
    """Run `command`; its wall time, CPU (user + system) and peak RSS from wait4()."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, cwd=ROOT)
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            process.kill()

        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, usage = os.wait4(process.pid, 0)
        timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        text = out.read()
    return Measured(
        process.returncode,
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        text,
        killed.is_set(),
    )


def books(origin: str) -> dict[str, Any]:
    with httpx.Client(timeout=120) as client:
        stats = client.get(f"{origin}/_sandbox/stats").json()["providers"]
        drawn = client.get(f"{origin}/_sandbox/jobs").json()
    requests = sum(sum(b["requests"].values()) + b["downloads"] for b in stats.values())
    throttled = sum(b["throttled"] + b["busy"] for b in stats.values())
    return {"requests": requests, "throttled": throttled, "stats": stats, "drawn": drawn}


def runner_counts(out: Path) -> dict[str, int]:
    found = list(out.glob("*/latest/batch.json"))
    if not found:
        return {}
    counts = json.loads(found[0].read_text()).get("counts") or {}
    return {str(k): int(v) for k, v in counts.items()}


def run_runner(spec: sc.Spec, directory: Path, *, profile: Path | None = None) -> dict[str, Any]:
    manifest = directory / "runner.yaml"
    manifest.write_text(yaml.safe_dump(manifest_for(spec, spec.scale), sort_keys=False))
    out = directory / "runner-out"
    with sandbox(directory, spec, spec.scale, "runner") as origin:
        tool = [sys.executable, "-m", "runner"]
        if profile is not None:
            tool = [sys.executable, "-m", "pyinstrument", "-r", "session", "-o", str(profile)]
            tool += ["-m", "runner"]
        command = [*pinned(0), *tool, "run", str(manifest), "--sandbox", origin]
        command += ["--out", str(out), "--quiet"]
        run = measure(command, spec.runner_timeout)
        seen = books(origin)
    counts = runner_counts(out)
    spans = {}
    for name, jobs in seen["drawn"]["providers"].items():
        if jobs:
            created = [job["created"] for job in jobs]
            spans[name] = round((max(created) - min(created)) * spec.scale, 2)
    return {
        "exit": run.exit,
        "timed_out": run.timed_out,
        "makespan": run.wall * spec.scale,
        "wall": run.wall,
        "cpu": run.cpu,
        "peak_rss_mb": run.peak_rss_mb,
        "requests": seen["requests"],
        "throttled": seen["throttled"],
        "succeeded": counts.get("succeeded", 0),
        "counts": counts,
        "drawn": seen["drawn"],
        "submit_span_s": spans,  # first to last job created, per provider
        "per_provider": {
            name: {
                "requests": sum(b["requests"].values()) + b["downloads"],
                "throttled": b["throttled"],
                "busy": b["busy"],
                "max_window_requests": b["max_window_requests"],
            }
            for name, b in seen["stats"].items()
            if sum(b["requests"].values())
        },
    }


def run_baseline(spec: sc.Spec, mode: str, directory: Path) -> dict[str, Any]:
    scale = spec.baseline_scale if mode == "sdk" else spec.serial_scale
    budget = spec.baseline_budget if mode == "sdk" else SERIAL_BUDGET
    manifest = directory / f"{mode}.yaml"
    manifest.write_text(yaml.safe_dump(manifest_for(spec, 1.0), sort_keys=False))
    with sandbox(directory, spec, scale, mode) as origin:
        command = [*pinned(0), sys.executable, "-m", "tests.bench.baselines", mode]
        command += [str(manifest), origin, "--out", str(directory / f"{mode}-out")]
        command += ["--scale", str(scale), "--budget", str(budget)]
        run = measure(command, budget + 120)
        seen = books(origin)
    found: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1]) if run.stdout else {}
    return {
        **found,
        "scale": scale,
        "cpu": run.cpu,
        "peak_rss_mb": run.peak_rss_mb,
        "requests": seen["requests"],
        "throttled": seen["throttled"],
    }


# -- figures ---------------------------------------------------------------------------------


def ideal_of(spec: sc.Spec, manifest: Path, drawn: dict[str, Any]) -> dict[str, Any]:
    plan = load_manifest(manifest, env={}, sandbox_keys=True).plan
    lanes: dict[str, float] = {}
    minimum = 0
    for share in spec.shares:
        jobs = [job for job in plan.jobs if job.provider == share.provider]
        durations = [job["duration"] for job in drawn["providers"][share.provider]]
        info = PROVIDERS[share.provider]
        lanes[share.provider] = lane_ideal(lane_for(info, jobs, durations, share.real))
        minimum += sum(sum(minimum_requests(info, job)) for job in jobs)
    return {"ideal": max(lanes.values()), "lanes": lanes, "minimum_requests": minimum}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def startup_cpu() -> float:
    """CPU seconds of `runner --help`: the interpreter and runner's imports, paid once per
    run whatever its size (the median of three)."""
    runs = sorted(
        measure([*pinned(0), sys.executable, "-m", "runner", "--help"], 60).cpu for _ in range(3)
    )
    return runs[1]


STARTUP: list[float] = []  # measured once per report


def figures(spec: sc.Spec, directory: Path) -> dict[str, Any]:
    runner = run_runner(spec, directory)
    sdk = run_baseline(spec, "sdk", directory)
    serial = run_baseline(spec, "serial", directory)
    ideal = ideal_of(spec, directory / "runner.yaml", runner.pop("drawn"))
    n = spec.jobs
    sdk_done = bool(sdk.get("complete"))
    result: dict[str, Any] = {
        "title": spec.title,
        "jobs": n,
        "scale": spec.scale,
        "ideal_s": round(ideal["ideal"], 2),
        "ideal_lanes_s": {k: round(v, 2) for k, v in ideal["lanes"].items()},
        "minimum_requests": ideal["minimum_requests"],
        "makespan_s": round(runner["makespan"], 2),
        "makespan_vs_ideal": ratio(runner["makespan"], ideal["ideal"]),
        "makespan_vs_baseline": ratio(runner["makespan"], sdk.get("makespan")),
        "makespan_vs_serial": ratio(runner["makespan"], serial.get("makespan")),
        "requests": runner["requests"],
        "requests_vs_baseline": ratio(runner["requests"], sdk["requests"]),
        "requests_per_job_vs_minimum": ratio(runner["requests"], ideal["minimum_requests"]),
        "throttled": runner["throttled"],
        "throttled_share": ratio(runner["throttled"], runner["requests"]),
        "succeeded": runner["succeeded"],
        "cpu_s": round(runner["cpu"], 2),
        "cpu_s_per_1000_jobs": round(runner["cpu"] * 1000 / n, 3),
        "cpu_s_per_1000_jobs_after_startup": round(
            max(runner["cpu"] - STARTUP[0], 0.0) * 1000 / n, 3
        ),
        "peak_rss_mb": round(runner["peak_rss_mb"], 1),
        "runner": {k: v for k, v in runner.items() if k not in {"cpu", "peak_rss_mb"}},
        "baseline_sdk": sdk,
        "baseline_serial": serial,
        # Baseline (a) stopped before the end: its makespan and requests are lower bounds,
        # so the runner's ratios to it are upper bounds.
        "baseline_complete": sdk_done,
        "baseline_polls_more_than_once": (
            sdk["requests"] - sdk["throttled"] > ideal["minimum_requests"] + n
        ),
        "notes": list(spec.notes),
    }
    result["targets"] = judge(spec, result)
    return result


def judge(spec: sc.Spec, result: dict[str, Any]) -> list[dict[str, Any]]:
    verdicts = []
    for target in spec.targets:
        value = result.get(target.metric)
        applies = True
        if target.metric == "requests_vs_baseline":
            applies = bool(result["baseline_polls_more_than_once"])
        if target.metric == "peak_rss_mb":
            applies = spec.jobs >= 10_000
        met = None if value is None or not applies else bool(value <= target.limit)
        verdicts.append(
            {
                "target": target.text,
                "metric": target.metric,
                "limit": target.limit,
                "value": value,
                "applies": applies,
                "met": met,
            }
        )
    return verdicts


def scaling_point(jobs: int, root: Path) -> dict[str, Any]:
    spec = sc.scaling_spec(jobs)
    directory = root / spec.key
    directory.mkdir()
    runner = run_runner(spec, directory)
    durations = [j["duration"] for j in runner.pop("drawn")["providers"]["pulse"]]
    ideal = ideal_of(
        spec,
        directory / "runner.yaml",
        {"providers": {"pulse": durations and [{"duration": d} for d in durations]}},
    )
    return {
        "jobs": jobs,
        "completed": not runner["timed_out"] and runner["succeeded"] == jobs,
        "succeeded": runner["succeeded"],
        "makespan_s": round(runner["makespan"], 2),
        "ideal_s": round(ideal["ideal"], 2),
        "cpu_s": round(runner["cpu"], 2),
        "cpu_s_per_1000_jobs": round(runner["cpu"] * 1000 / jobs, 3),
        "peak_rss_mb": round(runner["peak_rss_mb"], 1),
        "requests_per_job": round(runner["requests"] / jobs, 2),
        "throttled": runner["throttled"],
    }


# -- profile ---------------------------------------------------------------------------------


def profile_s1(root: Path) -> dict[str, Any]:
    """S1's mix at PROFILE_JOBS jobs under pyinstrument: the text tree to profile-S1.txt,
    the functions with the most own time to the report."""
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    spec = next(s for s in sc.specs() if s.key == "S1")
    spec = sc.Spec("S1", spec.title, sc._rate_bound_mix(PROFILE_JOBS), scale=spec.scale)
    directory = root / "profile"
    directory.mkdir()
    session_file = directory / "s1.pyisession"
    runner = run_runner(spec, directory, profile=session_file)
    session = Session.load(str(session_file))
    text = ConsoleRenderer(unicode=False, color=False, show_all=False).render(session)
    PROFILE.write_text(text)
    own: dict[str, float] = {}
    by_file: dict[str, float] = {}
    idle = 0.0
    root_frame = session.root_frame()
    stack = [root_frame] if root_frame is not None else []
    while stack:
        frame = stack.pop()
        children = list(frame.children)
        stack.extend(children)
        if frame.is_synthetic:
            # pyinstrument's "[self]" leaves are their parent's own time (counted there);
            # "[await]" leaves are a coroutine waiting: idle, like the loop's epoll.
            if frame.function == "[await]":
                idle += frame.time
            continue
        self_time = frame.time - sum(c.time for c in children if c.function != "[self]")
        if frame.function in {"epoll.poll", "select"}:
            idle += self_time
            continue
        where = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
        own[where] = own.get(where, 0.0) + self_time
        module = frame.file_path_short.split(":")[0]
        by_file[module] = by_file.get(module, 0.0) + self_time
    busy = sum(own.values()) or 1.0
    top = sorted(own.items(), key=lambda item: -item[1])[:15]
    files = sorted(by_file.items(), key=lambda item: -item[1])[:12]
    return {
        "jobs": PROFILE_JOBS,
        "wall_s": round(runner["wall"], 2),
        "sampled_s": round(session.duration, 2),
        "cpu_s": round(session.cpu_time or 0.0, 2),
        "idle_s": round(idle, 2),
        "top_own_time": [
            {"where": where, "seconds": round(t, 2), "share": round(t / busy, 3)}
            for where, t in top
        ],
        "top_files": [
            {"where": where, "seconds": round(t, 2), "share": round(t / busy, 3)}
            for where, t in files
        ],
    }


# -- the report ------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render(report: dict[str, Any]) -> str:
    lines = [
        "# Benchmark report",
        "",
        f"Generated {report['generated_at']} at commit `{report['commit']}` by "
        "`make bench` (tests/bench/bench_report.py)"
        + (", **BENCH_QUICK=1 (reduced sizes)**" if report["quick"] else "")
        + f". Machine: {report['machine']}."
        + (
            f" This run re-measured only {', '.join(report['rerun'])}; the other parts are "
            "from earlier runs of the same runner code."
            if report.get("rerun")
            else ""
        ),
        "",
        "The machine is shared (other work runs beside the benchmark) and noisy: read the "
        "ratios, measured side by side in one run, not the absolute seconds; ±10-20 % is "
        "noise. Times are scenario seconds (what a real provider would take); a time-scaled "
        "run is converted back.",
        "",
        "## Scenarios",
        "",
        "| | jobs | ideal s | runner s | vs ideal | vs baseline (a) | vs one at a time "
        "| requests vs (a) | requests / minimum | throttled | succeeded | CPU s / 1,000 jobs "
        "(after start-up) | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    scenarios = report["scenarios"]
    for key, s in scenarios.items():
        bound = "" if s["baseline_complete"] else " ≤"
        lines.append(
            f"| {key} | {fmt(s['jobs'])} | {fmt(s['ideal_s'])} | {fmt(s['makespan_s'])} "
            f"| {fmt(s['makespan_vs_ideal'])} | {bound}{fmt(s['makespan_vs_baseline'])} "
            f"| {fmt(s['makespan_vs_serial'])} | {bound}{fmt(s['requests_vs_baseline'])} "
            f"| {fmt(s['requests_per_job_vs_minimum'])} | {fmt(s['throttled'])} "
            f"| {fmt(s['succeeded'])}/{fmt(s['jobs'])} | {fmt(s['cpu_s_per_1000_jobs'])} "
            f"({fmt(s.get('cpu_s_per_1000_jobs_after_startup'))}) | {fmt(s['peak_rss_mb'])} |"
        )
    lines += ["", "What each scenario is, and its baselines:", ""]
    for key, s in scenarios.items():
        sdk, serial = s["baseline_sdk"], s["baseline_serial"]
        sdk_state = (
            "finished"
            if s["baseline_complete"]
            else (
                f"stopped after {fmt(sdk.get('wall'))} s wall with {fmt(sdk.get('finished'))} "
                "jobs ended (its figures are lower bounds)"
            )
        )
        serial_state = (
            f"extrapolated from {fmt(serial.get('sampled_jobs'))} jobs"
            if serial.get("estimated")
            else "finished"
        )
        lines.append(
            f"- **{key}**: {s['title']}. Ideal {fmt(s['ideal_s'])} s (per provider: "
            + ", ".join(f"{p} {fmt(v)}" for p, v in s["ideal_lanes_s"].items())
            + f"); time scale ×{fmt(s['scale'])}. Baseline (a) ×{fmt(sdk.get('scale'))}: "
            f"{fmt(sdk.get('makespan'))} s, {fmt(sdk['requests'])} requests, "
            f"{fmt(sdk['throttled'])} throttled, {fmt(sdk.get('succeeded'))} succeeded, "
            f"{sdk_state}. One at a time: {fmt(serial.get('makespan'))} s ({serial_state}). "
            + " ".join(s["notes"])
        )
    lines += [
        "",
        "## Targets (issue 12, item 3)",
        "",
        "| | target | value | met |",
        "|---|---|---|---|",
    ]
    for key, s in scenarios.items():
        for t in s["targets"]:
            met = "n/a" if not t["applies"] else fmt(t["met"])
            lines.append(f"| {key} | {t['target']} | {fmt(t['value'])} | {met} |")
    scaling = report.get("scaling") or []
    if scaling:
        lines += [
            "",
            "## Scaling curve",
            "",
            "Pulse jobs of 0.2-1 s, 600 requests/s and 300 in flight declared (the issue's "
            "10,000-job case at each size), real time.",
            "",
            "| jobs | completed | runner s | ideal s | CPU s | CPU s / 1,000 jobs "
            "| peak RSS MB | requests / job | throttled |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for p in scaling:
            if "skipped" in p:
                lines.append(f"| {fmt(p['jobs'])} | not run: {p['skipped']} |||||||| ")
                continue
            lines.append(
                f"| {fmt(p['jobs'])} | {fmt(p['completed'])} | {fmt(p['makespan_s'])} "
                f"| {fmt(p['ideal_s'])} | {fmt(p['cpu_s'])} | {fmt(p['cpu_s_per_1000_jobs'])} "
                f"| {fmt(p['peak_rss_mb'])} | {fmt(p['requests_per_job'])} "
                f"| {fmt(p['throttled'])} |"
            )
        lines += ["", report.get("largest_batch", "")]
    profile = report.get("profile")
    if profile:
        lines += [
            "",
            f"## Profile of S1 ({fmt(profile['jobs'])} jobs, pyinstrument)",
            "",
            f"{fmt(profile['sampled_s'])} s sampled (wall), {fmt(profile['cpu_s'])} s CPU, "
            f"{fmt(profile.get('idle_s'))} s of it idle (the event loop's epoll, coroutines "
            "awaiting); the full call tree is tests/bench/profile-S1.txt. Own time per "
            "function and per file (sampled wall time less idle: on a shared machine it "
            "includes waiting for the CPU), with its share of the busy time:",
            "",
            "| function | own s | share |",
            "|---|---|---|",
        ]
        for row in profile["top_own_time"]:
            lines.append(f"| `{row['where']}` | {fmt(row['seconds'])} | {row['share']:.1%} |")
        lines += ["", "| file | own s | share |", "|---|---|---|"]
        for row in profile.get("top_files", []):
            lines.append(f"| `{row['where']}` | {fmt(row['seconds'])} | {row['share']:.1%} |")
    lines += shard_lines(load_shards())
    lines += ["", "## How these figures are made", "", *HOW, ""]
    return "\n".join(lines)


SHARDS = Path(__file__).with_name("shards.json")  # written by bench_shards.py, run before


def load_shards() -> dict[str, Any] | None:
    return json.loads(SHARDS.read_text()) if SHARDS.exists() else None


def shard_lines(shards: dict[str, Any] | None) -> list[str]:
    """The makespan of 1, 2 and 4 shards (issue 14), from tests/bench/shards.json."""
    if not shards:
        return []
    lines = [
        "",
        "## Shards (tests/bench/bench_shards.py)",
        "",
        f"{shards['what']}. `none`: the same shards without the store (a control).",
        "",
        "| scenario | shards | store | makespan s | batches' span s | 429s | submit POSTs / jobs |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in ("rate_bound", "in_flight_bound"):
        entry = shards.get(key)
        if not entry:
            continue
        for run in entry["runs"]:
            store = "redis" if run["shared_store"] else "none"
            lines.append(
                f"| {key.replace('_', '-')} | {run['shards']} | {store} "
                f"| {fmt(run['makespan_s'])} | {fmt(run['batch_span_s'])} "
                f"| {fmt(run['throttled_429'])} | {run['submit_posts']} / {entry['jobs']} |"
            )
    return lines


HOW = [
    "- Each run has its own `runner sandbox` process (`--time-scale K` divides job "
    "durations and rate windows by K); runner runs as `runner run M --sandbox URL` in its "
    "own process; CPU (user + system) and peak RSS come from wait4(). Requests and 429s "
    "are the sandbox's books; `throttled` counts 429s and hidden-cap refusals.",
    "- **Ideal** (tests/bench/ideal.py): per provider, the larger of the requests a job "
    "needs at the least (submit + one poll after completion + result pages, by the "
    "provider's estimate rules) at each real rate, and the clairvoyant schedule of the "
    "durations the sandbox drew (longest first into free in-flight slots, submits paced); "
    "the slowest provider's. No runner can beat it; it ignores request latency.",
    "- **Baseline (a)** (tests/bench/baselines.py): the providers' own client pattern "
    "driving runner's adapters: all jobs at once, polls every 2-3 s, a 429 retried after "
    "Retry-After, other refusals lose the job. **One at a time**: the same, sequentially; "
    "when it would take too long it runs for a budget and extrapolates each provider's "
    "mean job time. Both are fixed-interval clients, so they run time-scaled faithfully.",
    "- **CPU per 1,000 jobs** is the runner process's whole CPU time; in brackets, less "
    "the start-up (`runner --help`: interpreter and imports, see report.json "
    "`runner_startup_cpu_s`), which dominates small batches.",
    "- Retry-After is whole seconds: in a time-scaled run a 429 costs more scenario time "
    "than it would in real life. Runner runs scaled only in S1, where all limits are "
    "declared and it should see no 429.",
]


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}, load average {load[0]:.1f} at start"
    )


def commit() -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "runner"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return found.stdout.strip() + ("+changes" if dirty else "")


README = ROOT / "README.md"
QUOTE_START = "<!-- scenario-report: tests/bench/bench_report.py; refresh with make bench -->"
QUOTE_END = "<!-- /scenario-report -->"


def quote_in_readme(text: str) -> None:
    """The report, less its title and method, between the README's markers (headings one
    level down), so the README quotes the figures of the last `make bench`."""
    body = text.split("\n## How these figures are made")[0].split("\n", 1)[1].strip()
    body = body.replace("\n## ", "\n#### ")
    body += "\n\nMethod and caveats: [tests/bench/REPORT.md](tests/bench/REPORT.md)."
    readme = README.read_text()
    start, end = readme.find(QUOTE_START), readme.find(QUOTE_END)
    if start < 0 or end < start:
        print("README.md: scenario-report markers not found; not quoted", file=sys.stderr)
        return
    start += len(QUOTE_START)
    README.write_text(readme[:start] + "\n" + body + "\n" + readme[end:])


def save(report: dict[str, Any]) -> None:
    """Written after each part, so a failure late in the run keeps what was measured."""
    report["scenarios"] = dict(sorted(report["scenarios"].items()))
    REPORT_JSON.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def publish(report: dict[str, Any]) -> None:
    text = render(report)
    REPORT_MD.write_text(text)
    quote_in_readme(text)
    print(text)


def main() -> None:
    if sys.argv[1:] == ["--render"]:  # REPORT.md and the README again from report.json
        publish(json.loads(REPORT_JSON.read_text()))
        return
    only = {k for k in os.environ.get("BENCH_ONLY", "").split(",") if k}
    report: dict[str, Any] = {}
    if only and REPORT_JSON.exists():
        report = json.loads(REPORT_JSON.read_text())
    report.update(
        generated_at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        commit=commit(),
        machine=machine(),
        quick=sc.QUICK,
        rerun=sorted(only),
    )
    report.setdefault("scenarios", {})
    STARTUP.append(startup_cpu())
    report["runner_startup_cpu_s"] = round(STARTUP[0], 3)
    with tempfile.TemporaryDirectory(dir=scratch()) as tmp:
        root = Path(tmp)
        for spec in sc.specs():
            if only and spec.key not in only:
                continue
            directory = root / spec.key
            directory.mkdir()
            started = time.perf_counter()
            try:
                report["scenarios"][spec.key] = figures(spec, directory)
            except Exception:  # one broken scenario must not lose the others' figures
                traceback.print_exc()
                report.setdefault("failed", []).append(spec.key)
                continue
            save(report)
            print(f"{spec.key}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        if not only or "scaling" in only:
            report["scaling"] = []
            for jobs in sc.scaling_sizes():
                last = report["scaling"][-1] if report["scaling"] else None
                projected = last["cpu_s"] * jobs / last["jobs"] if last else 0.0
                if projected > SCALE_CPU_BUDGET:
                    report["scaling"].append(
                        {
                            "jobs": jobs,
                            "skipped": f"projected {projected:.0f} s of CPU > "
                            f"BENCH_SCALE_CPU_BUDGET={SCALE_CPU_BUDGET:.0f}",
                        }
                    )
                    continue
                point = scaling_point(jobs, root)
                report["scaling"].append(point)
                save(report)
                print(f"scaling {jobs}: {point['makespan_s']} s", file=sys.stderr)
            done = [p for p in report["scaling"] if p.get("completed")]
            report["largest_batch"] = (
                f"Largest batch run to the end on this machine: {done[-1]['jobs']:,} jobs "
                f"({done[-1]['peak_rss_mb']:.0f} MB peak RSS)."
                if done
                else "No scaling point completed."
            )
        if not only or "profile" in only:
            report["profile"] = profile_s1(root)
    save(report)
    publish(report)


if __name__ == "__main__":
    main()
