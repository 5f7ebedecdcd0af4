"""The baselines a scenario's runner figures are compared with, in the same run:

- `sdk`: the providers' own client pattern. Every job gathered at once, each submitted and
  then polled every 2-3 s until it ends, a 429 retried after its Retry-After (1 s when it
  has none), any other refusal raised (the job is lost), results fetched at the end.
- `serial`: one job at a time, the same fixed polls.

Both drive runner's own adapters (the same wire format and parsing) through PlainHttp, a
ProviderHttp with no gate, no pacing and no learning. They are our clients, so they run
time-scaled exactly: `--scale K` divides every wait by K against a sandbox K times faster,
and their makespan is reported in scenario seconds (wall x K). `--budget S` stops them after
S wall seconds: `sdk` then reports how far it got, `serial` extrapolates its per-provider
mean job time to the whole batch.

    python -m tests.bench.baselines sdk|serial MANIFEST ORIGIN [--scale K] [--budget S]

prints one JSON line; tests/bench/bench_report.py runs it as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from runner.errors import ProviderCallError, TransportError
from runner.http.client import Bounds, Transport
from runner.http.ratelimit_headers import wait_hint
from runner.manifest.loader import load_manifest
from runner.plan import JobSpec, Plan
from runner.providers.base import Adapter, Reply, Request
from runner.providers.registry import ADAPTERS
from runner.remote import RemoteState
from runner.sandbox.server import sandbox_base_urls
from tests.bench.clients import AiohttpTransport

POLL = (2.0, 3.0)  # seconds between polls, drawn per poll (the official clients' 2-3 s)
NO_HINT_WAIT = 1.0  # a 429 without Retry-After waits this long
POOL = 32  # connections per provider for `sdk` (a shared client per provider)
# No deadline on a request, so thousands of requests queued for the pool wait their turn
# instead of timing out (the product's transport gives up after its connect timeout).
PATIENT = Bounds(deadline=24 * 3600.0)


@dataclass
class Tally:
    throttled_seen: int = 0
    finished: int = 0
    succeeded: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class PlainHttp:
    """ProviderHttp without a gate: send, wait out a 429, raise anything else."""

    def __init__(
        self,
        adapter: Adapter,
        base_url: str,
        api_key: str,
        transport: Transport,
        tally: Tally,
        scale: float,
    ) -> None:
        self.adapter = adapter
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.transport = transport
        self.tally = tally
        self.scale = scale
        self._notes: dict[str, Any] = {}

    @property
    def notes(self) -> Mapping[str, Any]:
        return self._notes

    def note(self, key: str, value: Any) -> None:
        self._notes[key] = value

    def _url(self, path: str) -> str:
        return path if "://" in path else self.base_url + path

    async def _wait_or_raise(self, what: str, reply: Reply) -> None:
        api = self.adapter.classify_error(reply)
        if reply.status_code == 429:
            self.tally.throttled_seen += 1
            hint = wait_hint(reply.headers, time.time(), api.retry_after, throttled=True)
            await anyio.sleep((NO_HINT_WAIT if hint is None else hint) / self.scale)
            return
        raise ProviderCallError(
            f"{what}: HTTP {reply.status_code} {api.code or ''}".strip(),
            provider=self.adapter.info.name,
            job_id=None,
            kind=api.kind,
            status_code=reply.status_code,
            code=api.code,
        )

    async def send(self, request: Request) -> Reply:
        url = self._url(request.path)
        headers = {**self.adapter.auth_headers(self.api_key), **request.headers}
        while True:
            reply = await self.transport.request(
                request.method, url, headers=headers, params=request.params, json=request.json
            )
            if 200 <= reply.status_code < 300:
                return reply
            await self._wait_or_raise(f"{request.method} {request.path}", reply)

    async def download(
        self, url: str, dest: Path, *, send_key: bool, max_bytes: int | None = None
    ) -> int:
        headers = self.adapter.auth_headers(self.api_key) if send_key else {}
        dest.parent.mkdir(parents=True, exist_ok=True)
        while True:
            reply, size = await self.transport.download(
                self._url(url), dest, headers=headers, max_bytes=max_bytes
            )
            if 200 <= reply.status_code < 300:
                return size
            await self._wait_or_raise(f"GET {url}", reply)


class DirSink:
    """A ResultSink writing one job's results under its own directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write_result(self, obj: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "result.json").write_text(json.dumps(obj))

    def append_item(self, obj: Any) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / "results.jsonl").open("a") as handle:
            handle.write(json.dumps(obj) + "\n")

    def file_path(self, name: str) -> Path:
        path = self.directory / "files" / name.replace("/", "_")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_file(self, name: str, data: bytes) -> Path:
        path = self.file_path(name)
        path.write_bytes(data)
        return path


class Client:
    """One baseline run of a plan against a sandbox."""

    def __init__(self, plan: Plan, origin: str, out: Path, scale: float, pool: int) -> None:
        self.plan = plan
        self.out = out
        self.scale = scale
        self.tally = Tally()
        self.urls = sandbox_base_urls(origin)
        # Plain aiohttp: the cheapest client per request (tests/bench/clients.py), so a
        # baseline's thousands of polls cost it as little CPU as they can.
        self.transports: dict[str, Transport] = {
            name: AiohttpTransport(pool, 30.0, PATIENT) for name in plan.providers
        }
        self.rng = random.Random(0)

    async def run_job(self, job: JobSpec) -> None:
        adapter = ADAPTERS[job.provider]
        settings = self.plan.providers[job.provider]
        http = PlainHttp(
            adapter,
            self.urls[job.provider],
            str(settings.api_key),
            self.transports[job.provider],
            self.tally,
            self.scale,
        )
        try:
            submitted = await adapter.submit(http, job)
            status = submitted.status
            while status is None or not status.state.terminal or not _fetchable(status):
                await anyio.sleep(self.rng.uniform(*POLL) / self.scale)
                status = await adapter.poll(http, job, submitted.ref)
            if status.state is RemoteState.SUCCEEDED:
                sink = DirSink(self.out / job.id)
                await adapter.fetch(http, job, submitted.ref, status, sink)
                self.tally.succeeded += 1
            else:
                self.tally.failed += 1
        except ProviderCallError as exc:
            self._lost(f"{job.provider} {exc.kind.value} {exc.code or exc.status_code}")
        except TransportError as exc:
            self._lost(f"{job.provider} transport {exc.reason}")
        self.tally.finished += 1

    def _lost(self, why: str) -> None:
        self.tally.failed += 1
        self.tally.errors[why] = self.tally.errors.get(why, 0) + 1

    async def close(self) -> None:
        for transport in self.transports.values():
            await transport.aclose()


def _fetchable(status: Any) -> bool:
    return bool(status.results_ready) or status.state is not RemoteState.SUCCEEDED


async def run_sdk(client: Client, budget: float) -> dict[str, Any]:
    start = time.perf_counter()
    with anyio.move_on_after(budget):
        async with anyio.create_task_group() as group:
            for job in client.plan.jobs:
                group.start_soon(client.run_job, job)
    wall = time.perf_counter() - start
    complete = client.tally.finished == len(client.plan.jobs)
    return {"wall": wall, "complete": complete, "estimated": False, "makespan_wall": wall}


async def run_serial(client: Client, budget: float) -> dict[str, Any]:
    """Round-robin over providers, one job at a time, until done or out of budget; then
    the batch's makespan is each provider's mean job time x its job count, summed."""
    queues: dict[str, list[JobSpec]] = {}
    for job in client.plan.jobs:
        queues.setdefault(job.provider, []).append(job)
    spent: dict[str, float] = dict.fromkeys(queues, 0.0)
    done: dict[str, int] = dict.fromkeys(queues, 0)
    start = time.perf_counter()
    with anyio.move_on_after(budget):
        while any(done[p] < len(q) for p, q in queues.items()):
            for provider, queue in queues.items():
                if done[provider] < len(queue):
                    began = time.perf_counter()
                    await client.run_job(queue[done[provider]])
                    spent[provider] += time.perf_counter() - began
                    done[provider] += 1
    wall = time.perf_counter() - start
    complete = all(done[p] == len(q) for p, q in queues.items())
    sampled = [p for p in queues if done[p]]
    overall = sum(spent.values()) / max(sum(done.values()), 1)
    estimate = sum((spent[p] / done[p] if done[p] else overall) * len(q) for p, q in queues.items())
    return {
        "wall": wall,
        "complete": complete,
        "estimated": not complete,
        "makespan_wall": wall if complete else estimate,
        "sampled_jobs": sum(done.values()),
        "sampled_providers": sampled,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="baselines")
    parser.add_argument("mode", choices=("sdk", "serial"))
    parser.add_argument("manifest", type=Path)
    parser.add_argument("origin")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--budget", type=float, default=600.0)
    args = parser.parse_args(argv)
    plan = load_manifest(args.manifest, env={}, sandbox_keys=True).plan
    pool = POOL if args.mode == "sdk" else 2
    clients: list[Client] = []
    started = time.perf_counter()

    def result(found: Mapping[str, Any]) -> str:
        tally = clients[0].tally if clients else Tally()
        return json.dumps(
            {
                "mode": args.mode,
                "jobs": len(plan.jobs),
                **found,
                "makespan": found["makespan_wall"] * args.scale,
                "finished": tally.finished,
                "succeeded": tally.succeeded,
                "failed": tally.failed,
                "throttled_seen": tally.throttled_seen,
                "errors": tally.errors,
            }
        )

    def watchdog() -> None:
        """Cancelling thousands of requests can outlast the budget by far: say how far
        the run got, and stop the process."""
        wall = time.perf_counter() - started
        found = {"wall": wall, "complete": False, "estimated": False, "makespan_wall": wall}
        print(result({**found, "watchdog": True}), flush=True)
        os._exit(0)

    timer = threading.Timer(args.budget + 20.0, watchdog)
    timer.daemon = True
    timer.start()

    async def go() -> dict[str, Any]:
        client = Client(plan, args.origin, args.out, args.scale, pool)
        clients.append(client)
        try:
            run = run_sdk if args.mode == "sdk" else run_serial
            return await run(client, args.budget)
        finally:
            await client.close()

    found = anyio.run(go)
    timer.cancel()
    print(result(found), flush=True)


if __name__ == "__main__":
    main()
