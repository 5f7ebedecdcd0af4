"""`runner run` end to end: load, pick jobs, point at a sandbox, drive the engine, seal results.

The only place that wires the parts together: manifest → plan → (sandbox) → one Gate,
transport and ProviderClient per provider → Engine → BatchDir. Returns the exit code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import anyio

from runner.console import summary_line
from runner.engine import Engine, EngineResult
from runner.errors import UsageError
from runner.exits import ExitCode
from runner.http import ProviderClient, Transport, make_transport
from runner.lifecycle import JobRecord, Recorder, State
from runner.limits import Gate, pool_size_for
from runner.manifest import load_manifest
from runner.plan import Plan
from runner.providers import ADAPTERS
from runner.results import BatchDir

IN_PROCESS = "in-process"  # `--sandbox` without a URL


def select_jobs(plan: Plan, only: Sequence[str] = (), tags: Sequence[str] = ()) -> Plan:
    """The plan restricted to `--only` ids and `--tag` tags (a job matching either stays)."""
    if not only and not tags:
        return plan
    unknown = [job_id for job_id in only if job_id not in {j.id for j in plan.jobs}]
    if unknown:
        raise UsageError(f"--only: no job {unknown[0]!r} in {plan.source}")
    wanted = set(only)
    chosen = tuple(j for j in plan.jobs if j.id in wanted or set(tags) & set(j.tags))
    if not chosen:
        raise UsageError(f"--tag: no job in {plan.source} has tag {', '.join(tags)}")
    return dataclasses.replace(plan, jobs=chosen)


def point_at(plan: Plan, base_urls: Mapping[str, str]) -> Plan:
    """Every provider of the plan aimed at the sandbox's base URL for it."""
    providers = {
        name: dataclasses.replace(settings, base_url=base_urls[name])
        for name, settings in plan.providers.items()
    }
    return dataclasses.replace(plan, providers=providers)


def check_sandbox_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--sandbox: {url!r} is not a URL like http://127.0.0.1:8000")


@contextlib.contextmanager
def sandbox_urls(sandbox: str | None) -> Iterator[Mapping[str, str] | None]:
    """Base URLs of the sandbox to use: started here (in-process) or already running."""
    if sandbox is None:
        yield None
        return
    from runner.sandbox.server import sandbox_base_urls

    if sandbox != IN_PROCESS:
        check_sandbox_url(sandbox)
        yield sandbox_base_urls(sandbox)
        return
    from runner.sandbox.app import create_app
    from runner.sandbox.server import serve_in_thread

    with serve_in_thread(create_app()) as running:
        yield running.base_urls


def build_clients(plan: Plan, *, client: str | None = None) -> dict[str, ProviderClient]:
    """One Gate + pooled transport + ProviderClient per provider that has jobs to run."""
    used = {job.provider for job in plan.jobs}
    clients: dict[str, ProviderClient] = {}
    for name, settings in plan.providers.items():
        if name not in used or name not in ADAPTERS:
            continue
        pool = pool_size_for(settings.limits)
        clients[name] = ProviderClient(
            provider=name,
            base_url=settings.base_url,
            api_key=settings.api_key,
            adapter=ADAPTERS[name],
            gate=Gate(name, settings.limits, pool_size=pool),
            transport=make_transport(pool, client=client),
        )
    return clients


async def drive(
    plan: Plan,
    batch: BatchDir,
    *,
    clients: Mapping[str, ProviderClient],
    recorders: Sequence[Recorder] = (),
    records: Sequence[JobRecord] | None = None,
    stderr: TextIO = sys.stderr,
) -> tuple[EngineResult, Engine]:
    """Run the engine over `plan`, writing into `batch`; closes every transport."""

    def notify(event: str, fields: Mapping[str, Any]) -> None:
        print(f"runner: {fields['message']}", file=stderr)

    engine = Engine(
        plan,
        clients=clients,
        adapters={name: ADAPTERS[name] for name in clients},
        output=batch,
        recorders=recorders,
        records=records,
        rng=random.Random(batch.batch_id),  # seeded per batch: jitter is reproducible
        notify=notify,
    )
    transports: list[Transport] = [c.transport for c in clients.values()]
    try:
        result = await engine.run()
    finally:
        with anyio.CancelScope(shield=True):
            for transport in transports:
                await transport.aclose()
    return result, engine


def exit_code(result: EngineResult) -> ExitCode:
    return ExitCode.OK if result.succeeded else ExitCode.JOBS_FAILED


def run_batch(
    manifest: Path,
    *,
    out: Path = Path("results"),
    sandbox: str | None = None,
    only: Sequence[str] = (),
    tags: Sequence[str] = (),
    argv: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stderr: TextIO | None = None,
    client: str | None = None,
) -> int:
    """`runner run`: every job of the manifest to a terminal state; 0 if all succeeded."""
    stderr = stderr or sys.stderr
    if sandbox is not None and sandbox != IN_PROCESS:
        check_sandbox_url(sandbox)  # before reading anything
    loaded = load_manifest(manifest, env=env, sandbox_keys=sandbox is not None)
    for notice in loaded.notices:
        print(f"runner: {notice}", file=stderr)
    plan = select_jobs(loaded.plan, only, tags)
    with sandbox_urls(sandbox) as urls:
        if urls is not None:
            plan = point_at(plan, urls)
        started = datetime.now(UTC)
        clock = time.monotonic()
        batch = BatchDir.create(out, plan, now=started)
        clients = build_clients(plan, client=client)
        result, engine = anyio.run(lambda: drive(plan, batch, clients=clients, stderr=stderr))
    code = exit_code(result)
    counts = {state.value: n for state, n in result.counts.items()}
    remote_ids = {
        job_id: record.remote.id
        for job_id, record in engine.records.items()
        if record.remote is not None
    }
    batch.finish(
        counts=counts,
        exit_code=int(code),
        started=started,
        ended=datetime.now(UTC),
        argv=list(argv),
        secrets=list(plan.secrets),
        remote_ids=remote_ids,
    )
    for record in engine.records.values():
        if record.state is not State.SUCCEEDED:
            print(f"  {record.spec.id}: {record.state.value}: {record.error or ''}", file=stderr)
    line = summary_line(
        plan.name,
        batch.batch_id,
        counts,
        elapsed=time.monotonic() - clock,
        path=batch.path,
        exit_code=int(code),
    )
    print(line, file=stderr)
    return int(code)
