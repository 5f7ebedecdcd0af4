"""Store costs: journal transitions and polls, 100k-job journal create/load, job files, log.

A plain script (run by `make bench`): prints numbers, asserts nothing.
  .venv/bin/python tests/bench/bench_store.py [--jobs 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from runner.lifecycle import Event, JobRecord, advance
from runner.plan import JobSpec, Limits, Plan, PollPolicy, ProviderSettings, Secret
from runner.remote import FetchReport, RemoteRef, RemoteState, Status
from runner.store.journal import Journal
from runner.store.log import BatchLog, LogRecorder
from runner.store.results import BatchDir

LIFE = (Event.SUBMIT, Event.QUEUED, Event.RUNNING, Event.FINISHED, Event.FETCHED)


def make_plan(n: int) -> Plan:
    manifest = b"version: 1\nname: bench\n"
    settings = ProviderSettings(
        name="spidra",
        base_url="http://127.0.0.1:1",
        api_key=Secret("sk-bench-secret"),
        api_key_var="SPIDRA_API_KEY",
        limits=Limits(),
        poll=PollPolicy(2.0, 60.0, 1.5),
        timeout=1800.0,
    )
    jobs = tuple(
        JobSpec(id=f"job-{i:06d}", provider="spidra", type="scrape", params={}, index=i)
        for i in range(n)
    )
    return Plan(
        name="bench",
        source=Path("bench.yaml"),
        manifest_bytes=manifest,
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
        providers={"spidra": settings},
        jobs=jobs,
        secrets=(Secret("sk-bench-secret"),),
    )


def _report(label: str, seconds: float, count: int, unit: str = "op") -> None:
    print(f"{label:<44} {seconds * 1e6 / count:9.1f} µs/{unit}   ({count} in {seconds:.3f} s)")


def bench_journal(root: Path, jobs: int, lives: int) -> None:
    plan = make_plan(jobs)
    path = root / "journal.sqlite"
    start = time.perf_counter()
    journal = Journal.create(path, plan, "b")
    _report(f"journal create ({jobs} planned jobs)", time.perf_counter() - start, jobs, "job")

    records = journal.load_records(plan)[:lives]
    status = Status(RemoteState.RUNNING, raw="running", progress=0.5)
    transitions = polls = 0
    t_transition = t_poll = 0.0
    for job in records:
        for event in LIFE:
            previous = job.state
            job.state = advance(job.state, event)
            if event is Event.QUEUED:
                job.remote = RemoteRef(f"r-{job.spec.id}")
            t0 = time.perf_counter()
            journal.transition(job, event, previous)
            t_transition += time.perf_counter() - t0
            transitions += 1
            if event is Event.RUNNING:
                for _ in range(4):
                    job.polls += 1
                    t0 = time.perf_counter()
                    journal.polled(job, status)
                    t_poll += time.perf_counter() - t0
                    polls += 1
    _report("journal transition (committed, WAL, NORMAL)", t_transition, transitions)
    _report("journal poll update (batched commits)", t_poll, polls)
    journal.close()

    start = time.perf_counter()
    with Journal.open(path) as reopened:
        loaded = reopened.load_records(plan)
        counts = reopened.counts()
    _report(f"journal open + load_records ({jobs} jobs)", time.perf_counter() - start, jobs, "job")
    assert len(loaded) == jobs
    assert sum(counts.values()) == jobs


def bench_results(root: Path, jobs: int, items: int) -> None:
    plan = make_plan(jobs)
    batch = BatchDir.create(root, plan, now=datetime(2026, 11, 22, 3, tzinfo=UTC))
    payload = {"title": "x" * 600, "price": 12.5, "tags": ["a", "b", "c"]}
    start = time.perf_counter()
    for i in range(items):
        batch.job_dir("job-000000").append_item({**payload, "n": i})
    batch.job_dir("job-000000").commit()
    _report("results.jsonl append_item (~0.7 KB)", time.perf_counter() - start, items, "item")

    start = time.perf_counter()
    for spec in plan.jobs:
        job = batch.job_dir(spec.id)
        job.write_status({"status": "completed", "id": spec.id})
        job.write_result(payload)
        record = JobRecord(spec=spec)
        job.write_outcome(record, FetchReport(items=1))
    _report("per job: status + result + job.json", time.perf_counter() - start, jobs, "job")

    start = time.perf_counter()
    batch.finish(
        counts={"succeeded": jobs},
        exit_code=0,
        started=datetime(2026, 11, 22, 3, tzinfo=UTC),
        ended=datetime(2026, 11, 22, 4, tzinfo=UTC),
        argv=["runner", "run"],
        secrets=plan.secrets,
    )
    files = jobs * 3 + 1
    _report("finish: SHA256SUMS + batch.json + latest", time.perf_counter() - start, files, "file")


def bench_log(root: Path, events: int) -> None:
    plan = make_plan(1)
    log = BatchLog(root / "log.jsonl", batch_id="b", secrets=plan.secrets)
    recorder = LogRecorder(log)
    job = JobRecord(spec=plan.jobs[0])
    job.remote = RemoteRef("r-1")
    status = Status(RemoteState.RUNNING, raw="running")
    start = time.perf_counter()
    for _ in range(events):
        recorder.polled(job, status)
    _report("log event (redacted, flushed per line)", time.perf_counter() - start, events, "event")
    log.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000, help="planned jobs in the journal")
    parser.add_argument("--lives", type=int, default=2_000, help="jobs driven through a life")
    parser.add_argument("--files", type=int, default=2_000, help="jobs written to jobs/")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        root = Path(tmp)
        bench_journal(root, args.jobs, args.lives)
        bench_results(root / "results", args.files, 20_000)
        bench_log(root, 20_000)


if __name__ == "__main__":
    main()
