"""Load with faults, shared by tests/e2e/test_reconcile.py (a few hundred jobs) and
tests/bench/bench_faults.py (3,000): jobs of all five providers against a sandbox that
answers 5 % of requests with a 5xx (half of them after the job was created), drops 1 % of
connections and throttles Pulse below what the manifest declares (a 429 storm); then every
job is checked against the sandbox's books."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runner.manifest.loader import load_manifest
from runner.plan import JobSpec
from runner.providers import bulkgrid, pulse, skop, spidra
from runner.sandbox import determinism as det

RATE = 200  # requests/s declared per provider, and enforced by the sandbox
STORM = "pulse"  # throttled by the sandbox at a fifth of what the manifest declares
# ... counted in 100 ms windows: a runner slowed by a busy machine still bunches more than
# 4 requests into some 100 ms (its own pacing is 1 per 5 ms), so the storm always happens.
BURST = {"status": 500, "count": 1, "every": 20, "after_accept": 0.5}  # 5 % 5xx
LISTING = {"bulkgrid", "lobstr", "spidra:batch", "spidra:crawl"}  # can look a submit up
KEYS = {
    "BULKGRID_API_KEY": "bg_load",
    "LOBSTR_API_KEY": "lobstr-load",
    "SPIDRA_API_KEY": "spd_load",
    "SKOP_API_KEY": "sk-load",
    "PULSE_API_KEY": "pulse_load",
}
BUILDERS = {
    "bulkgrid": bulkgrid.build_submit,
    "spidra": spidra.build_submit,
    "skop": skop.build_submit,
    "pulse": pulse.build_submit,
}


def scenario() -> dict[str, Any]:
    limit = {"requests": RATE, "per": "1s"}
    faults = {"error_burst": BURST, "drop_connection_rate": 0.01, "drop_after_accept": True}
    providers: dict[str, Any] = {name: {"rate_limit": limit, **faults} for name in KEYS_BY}
    providers[STORM]["rate_limit"] = {"requests": RATE // 50, "per": "100ms"}
    return {
        "time_scale": 1,
        "defaults": {"duration": {"min": 0.05, "max": 0.3}, "results": {"min": 1, "max": 2}},
        "providers": providers,
    }


KEYS_BY = ("bulkgrid", "lobstr", "spidra", "skop", "pulse")


def manifest(directory: Path, jobs: int) -> Path:
    """`jobs` jobs: a quarter Bulkgrid, a tenth Lobstr, a quarter Spidra (scrape, batch,
    crawl), 15 % Skop, the rest Pulse; every submit body distinct."""
    share = {"bulkgrid": 0.25, "lobstr": 0.10, "spidra": 0.25, "skop": 0.15}
    n = {name: max(3, int(jobs * part)) for name, part in share.items()}
    n["pulse"] = max(3, jobs - sum(n.values()))
    third = n["spidra"] // 3
    rate = {"rate": RATE, "per": "1s"}
    classes = {"submit": rate, "status": rate, "results": rate, "download": rate}
    limits = {"requests": rate, **classes, "in_flight": 150}
    document = {
        "version": 1,
        "name": "faults",
        "defaults": {"timeout": "2m", "poll": {"initial": "50ms", "max": "300ms"}},
        "providers": {name: {"api_key": f"${{{var}}}", "limits": limits}
                      for name, var in zip(KEYS_BY, KEYS, strict=True)},
        "jobs": [
            {"id": "bg-{n}", "provider": "bulkgrid", "type": "extract",
             "each": items(n["bulkgrid"], "shop"),
             "params": {"urls": ["https://{item}.example/"], "query": "Every price",
                "schema": {"type": "object"}}},
            {"id": "lo-{n}", "provider": "lobstr", "type": "run",
             "each": items(n["lobstr"], "city"),
             "params": {"crawler": "google-maps-search-export", "name": "{item}",
                        "params": {"language": "fr"},
                        "tasks": [{"url": "https://maps.example/search/{item}"}]},
             "fetch": {"results": True, "export": False}},
            {"id": "sp-{n}", "provider": "spidra", "type": "scrape",
             "each": items(third, "page"),
             "params": {"urls": [{"url": "https://{item}.example/"}], "output": "markdown"}},
            {"id": "sb-{n}", "provider": "spidra", "type": "batch",
             "each": items(third, "blog"),
             "params": {"urls": ["https://{item}.example/a", "https://{item}.example/b"]}},
            {"id": "sc-{n}", "provider": "spidra", "type": "crawl",
             "each": items(n["spidra"] - 2 * third, "help"),
             "params": {"baseUrl": "https://{item}.example/", "maxPages": 2},
             "fetch": {"pages": True}},
            {"id": "sk-{n}", "provider": "skop", "type": "scrape",
             "each": items(n["skop"], "investor"),
             "params": {"website": "https://{item}.example/",
                        "prompt": "Find the annual reports as PDF"},
             "fetch": {"documents": False}},
            {"id": "pu-{n}", "provider": "pulse", "type": "extract",
             "each": items(n["pulse"], "doc"),
             "params": {"file_url": "https://files.example/{item}.pdf"}},
        ],
    }  # fmt: skip
    path = directory / "faults.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    (directory / "scenario.yaml").write_text(yaml.safe_dump(scenario(), sort_keys=False))
    return path


def items(count: int, word: str) -> list[str]:
    return [f"{word}{i}" for i in range(count)]


def lister(spec: JobSpec) -> bool:
    return spec.provider in LISTING or f"{spec.provider}:{spec.type}" in LISTING


def body_key(spec: JobSpec) -> str | None:
    """The sandbox books' key of the job's submit body (Lobstr's is the squid's: None)."""
    build = BUILDERS.get(spec.provider)
    return None if build is None else det.body_key(build(spec).json)


@dataclass
class Check:
    """What the books and the results say, and every way they disagree (`problems`)."""

    jobs: int = 0
    states: Counter[str] = field(default_factory=Counter)
    unknown: int = 0  # submit_unknown
    unknown_by: Counter[str] = field(default_factory=Counter)  # provider:type → count
    jobs_by: Counter[str] = field(default_factory=Counter)
    unknown_never_arrived: int = 0  # of those, the submit never reached the sandbox
    lost: int = 0  # submits that faulted before a job existed (all providers)
    unanswered: int = 0  # submits that created a job, then faulted
    injected: int = 0
    dropped: int = 0
    throttled: Counter[str] = field(default_factory=Counter)
    list_requests: int = 0  # GET on the listing endpoints
    reconciles: int = 0  # Bulkgrid and Spidra jobs whose submit faulted (each looked up)
    problems: list[str] = field(default_factory=list)


LIST_LABELS = (
    "GET /api/v1/runs",
    "GET /v1/runs",
    "GET /api/batch/scrape",
    "GET /api/crawl/history",
)


def check(path: Path, batch: Path, books: Mapping[str, Any]) -> Check:
    """Every job terminal and consistent with the books: nothing created twice, every job
    of a provider that can list created exactly once, submit_unknown only where the runner
    truly cannot tell, no window over a declared limit (the storm provider aside)."""
    plan = load_manifest(path, env=KEYS).plan
    result = Check(jobs=len(plan.jobs))
    for name, entry in books.items():
        result.lost += sum(entry["submits_lost"].values())
        result.unanswered += sum(entry["submits_unanswered"].values())
        result.injected += entry["errors_injected"]
        result.dropped += entry["dropped"]
        result.throttled[name] = entry["throttled"]
        result.list_requests += sum(n for k, n in entry["requests"].items() if k in LIST_LABELS)
        twice = {k: n for k, n in entry["submits"].items() if n != 1}
        if twice:
            result.problems.append(f"{name}: submitted more than once: {twice}")
        if name != STORM and entry["max_window_requests"] > RATE:
            result.problems.append(f"{name}: {entry['max_window_requests']} requests in 1 s")
    for spec in plan.jobs:
        record = json.loads((batch / "jobs" / spec.id / "job.json").read_text())
        state = record["state"]
        result.states[state] += 1
        kind = f"{spec.provider}:{spec.type}"
        result.jobs_by[kind] += 1
        key = body_key(spec)
        entry = books[spec.provider]
        faulted = key is not None and (
            key in entry["submits_lost"] or key in entry["submits_unanswered"]
        )
        if faulted and lister(spec):
            result.reconciles += 1
        if state not in ("succeeded", "submit_unknown"):
            result.problems.append(f"{spec.id}: {state}: {record.get('error')}")
        if state == "submit_unknown":
            result.unknown += 1
            result.unknown_by[kind] += 1
            if lister(spec):
                result.problems.append(
                    f"{spec.id}: submit_unknown, yet its provider can list: {record.get('error')}"
                )
            elif key is not None and not faulted:
                result.problems.append(f"{spec.id}: submit_unknown without a fault on its submit")
            if key is not None and key not in entry["submits"]:
                result.unknown_never_arrived += 1
        elif key is not None and entry["submits"].get(key) != 1:
            result.problems.append(f"{spec.id}: {state} but created {entry['submits'].get(key)}x")
    lobstr = books["lobstr"]["submits"]
    runs = sum(1 for spec in plan.jobs if spec.provider == "lobstr")
    if result.states and sum(lobstr.values()) > 0 and len(lobstr) < runs:
        result.problems.append(f"lobstr: {len(lobstr)} distinct run submits for {runs} jobs")
    return result
