"""`runner run`, `resume`, `cancel`, `retry` end to end: the one place the parts are wired up.

manifest → plan → (sandbox) → lock → BatchDir + journal (before any request) + log + console →
one Gate, transport and ProviderClient per provider → Engine (signals stop it) → finish.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import anyio

from runner.batch import inputs, rate_store, reuse
from runner.batch import sample as canary
from runner.batch import shard as shards
from runner.batch.budget import require_fit, spending_for
from runner.batch.console import Console, summary_line
from runner.batch.expect import judge_for
from runner.batch.load import LoadSampler, log_plan, together
from runner.batch.retry import start_attempts
from runner.batch.usable import (
    check_url,
    prepare_out,
    require_manifest,
    require_sandbox,
    sandbox_command,
    sandbox_silence,
)
from runner.engine.budget import Spending
from runner.engine.engine import Engine, EngineResult, Judge
from runner.errors import InputError, JournalError, StoreError, UsageError, store_error
from runner.exits import ExitCode
from runner.http.client import ProviderClient, Transport, make_transport
from runner.http.limits import Gate, pool_size_for
from runner.http.shared_budget import StoreConfig, check_store
from runner.lifecycle import JobRecord, Recorder, State
from runner.manifest.loader import load_manifest, parse_manifest
from runner.plan import Plan
from runner.providers.base import Reply
from runner.providers.registry import ADAPTERS
from runner.store import lock
from runner.store.gitinfo import git_info
from runner.store.journal import JobRow, Journal
from runner.store.jsonio import canonical_json
from runner.store.locate import resolve_batch_dir
from runner.store.log import BatchLog, LogRecorder
from runner.store.redaction import redact
from runner.store.results import BATCH, MANIFEST, OUTCOME, BatchDir, Endpoints, write_atomic

_SIGNALS = {
    signal.SIGINT: ("SIGINT", ExitCode.SIGINT),
    signal.SIGTERM: ("SIGTERM", ExitCode.SIGTERM),
}

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
    check_url("--sandbox", url)


@contextlib.contextmanager
def sandbox_urls(sandbox: str | None) -> Iterator[Mapping[str, str] | None]:
    """Base URLs of the sandbox to use: started here (in-process) or already running."""
    if sandbox is None:
        yield None
        return
    from runner.sandbox.server import sandbox_base_urls

    if sandbox != IN_PROCESS:
        yield sandbox_base_urls(sandbox)
        return
    from runner.sandbox.app import create_app
    from runner.sandbox.server import serve_in_thread

    with serve_in_thread(create_app()) as running:
        yield running.base_urls


class _Counted:
    """A transport that tells the console of every request (and every 429) it carries."""

    def __init__(self, inner: Transport, console: Console) -> None:
        self._inner = inner
        self._console = console

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Reply:
        reply = await self._inner.request(method, url, headers=headers, params=params, json=json)
        self._console.request(throttled=reply.status_code == 429)
        return reply

    async def download(
        self, url: str, dest: Path, *, headers: Mapping[str, str], max_bytes: int | None
    ) -> tuple[Reply, int]:
        reply, size = await self._inner.download(url, dest, headers=headers, max_bytes=max_bytes)
        self._console.request(throttled=reply.status_code == 429)
        return reply, size

    async def aclose(self) -> None:
        await self._inner.aclose()


TransportFactory = Callable[[int], Transport]  # a pool size → that provider's transport


def build_clients(
    plan: Plan,
    *,
    transport_factory: TransportFactory = make_transport,
    console: Console | None = None,
) -> dict[str, ProviderClient]:
    """One Gate + pooled transport + ProviderClient per provider that has jobs to run.
    `transport_factory` is the seam tests and benchmarks swap the HTTP stack through."""
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
            transport=_counted(transport_factory(pool), console),
        )
    return clients


def _pause_reporter(name: str, log: BatchLog, console: Console) -> Callable[[float, str], None]:
    """provider.paused in the log and on the console, once per new provider-wide pause."""

    def report(seconds: float, reason: str) -> None:
        log.provider(name).warning("provider.paused", seconds=round(seconds, 3), reason=reason)
        console.provider_paused(name, seconds, reason)

    return report


def _counted(transport: Transport, console: Console | None) -> Transport:
    return transport if console is None else _Counted(transport, console)


Notify = Callable[[str, Mapping[str, Any]], None]
Watch = Callable[[Engine], Any]


async def drive(
    plan: Plan,
    batch: BatchDir,
    *,
    clients: Mapping[str, ProviderClient],
    recorders: Sequence[Recorder] = (),
    records: Sequence[JobRecord] | None = None,
    stderr: TextIO = sys.stderr,
    notify: Notify | None = None,
    watch: Watch | None = None,
    resubmit_unknown: bool = False,
    cancel: bool = False,
    judge: Judge | None = None,
    budget: Spending | None = None,
) -> tuple[EngineResult, Engine]:
    """Run the engine over `plan`, writing into `batch`; closes every transport. `watch`
    runs beside it (the signal watcher) and is cancelled when the engine is done."""

    def print_notice(event: str, fields: Mapping[str, Any]) -> None:
        print(f"runner: {fields['message']}", file=stderr)

    engine = Engine(
        plan,
        clients=clients,
        adapters={name: ADAPTERS[name] for name in clients},
        output=batch,
        recorders=recorders,
        records=records,
        rng=random.Random(batch.batch_id),  # seeded per batch: jitter is reproducible
        notify=notify or print_notice,
        resubmit_unknown=resubmit_unknown,
        judge=judge,
        budget=budget,
    )
    transports: list[Transport] = [c.transport for c in clients.values()]
    try:
        async with anyio.create_task_group() as tg:
            if watch is not None:
                tg.start_soon(watch, engine)
            result = await (engine.cancel_all() if cancel else engine.run())
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            for transport in transports:
                await transport.aclose()
    return result, engine


def exit_code(result: EngineResult) -> ExitCode:
    return ExitCode.OK if result.succeeded else ExitCode.JOBS_FAILED


# -- hints -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Hints:
    """The commands printed to a person (interrupt, internal error, a second Ctrl-C,
    cancel): each one works when pasted. A batch on an in-process sandbox cannot be resumed
    (the sandbox ended with its run), so its hints start over instead."""

    resume: str | None  # `runner resume DIR`, None when it could not work
    start_over: str  # `runner run M --sandbox --out ROOT`

    @classmethod
    def of(cls, batch: BatchDir, endpoints: Endpoints, source: str | None) -> Hints:
        manifest = source or str(batch.manifest_path)
        start_over = (
            f"runner run {shlex.quote(manifest)} --sandbox "
            f"--out {shlex.quote(str(batch.path.parent.parent))}"
        )
        if endpoints.sandbox == IN_PROCESS:
            return cls(None, start_over)
        return cls(f"runner resume {shlex.quote(str(batch.path))}", start_over)

    def next_step(self) -> str:
        """The sentence that ends an interrupted run."""
        if self.resume is not None:
            return f"Continue with: {self.resume}"
        return (
            "The in-process sandbox ended with this run, so this batch cannot be resumed; "
            f"start over with: {self.start_over}"
        )


# -- signals ---------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Signals:
    """Watches SIGINT/SIGTERM while the engine runs: the first stops it gracefully, a
    second exits at once (every transition is already committed; polls are flushed)."""

    journal: Journal
    log: BatchLog
    console: Console
    hints: Hints
    name: str | None = None
    code: ExitCode | None = None

    async def __call__(self, engine: Engine) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers belong to the main thread (an embedding caller's)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for signum in received:
                name, code = _SIGNALS[signal.Signals(signum)]
                if self.code is None:
                    self.name, self.code = name, code
                    self.log.logger.warning("batch.interrupting", signal=name)
                    self.console.notice(
                        f"runner: {name}: stopping (no new submits); "
                        "press Ctrl-C again to exit at once",
                        error=True,
                    )
                    engine.interrupt(f"interrupted by {name}")
                else:
                    self.journal.flush()
                    self.log.logger.warning("batch.aborted", signal=name, exit_code=int(code))
                    self.console.close()
                    print(
                        f"runner: {name} again: exited at once; the journal is intact. "
                        f"{self.hints.next_step()}",
                        file=sys.stderr,
                        flush=True,
                    )
                    os._exit(int(code))


# -- run, resume, cancel ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Options:
    argv: Sequence[str]
    stderr: TextIO
    quiet: bool
    transport_factory: TransportFactory | None
    resubmit_unknown: bool = False
    mode: str = "run"  # run | resume | cancel | retry
    only: Sequence[str] = ()  # retry: the jobs named by --only
    report: Callable[[Path, Sequence[str]], None] | None = None  # run --report: (dir, secrets)
    rate_store: StoreConfig | None = None  # budgets shared through Redis (--rate-store)
    shard: shards.Shard | None = None  # resume: the shard asked for (checked, never changed)
    reuse_log: Sequence[reuse.Logged] = ()  # run: what reuse decided, logged after batch.started
    on_batch: Callable[[Path, Sequence[str]], None] | None = None  # resume/retry --json, --ping


def endpoints_of(plan: Plan, sandbox: str | None) -> Endpoints:
    """Where `plan` (already pointed at any sandbox) sends each provider."""
    return Endpoints({name: s.base_url for name, s in plan.providers.items()}, sandbox)


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
    transport_factory: TransportFactory | None = None,
    quiet: bool = False,
    report: Callable[[Path, Sequence[str]], None] | None = None,
    sample: int | None = None,
    allow_partial: bool = False,
    on_batch: Callable[[Path, Sequence[str]], None] | None = None,
    shard: shards.Shard | None = None,
    store: StoreConfig | None = None,
    policy: reuse.Policy | None = reuse.INCREMENTAL,  # None: reuse nothing (runner.batch.reuse)
) -> int:
    """`runner run`: every job of the manifest to a terminal state; 0 if all succeeded.
    `report` is called with the batch directory and the secrets once it is sealed (or
    stopped), whatever the outcome. `sample`: the canary (runner.batch.sample); `on_batch`
    is told the batch directory as soon as it exists (--json, --ping). Jobs an earlier
    batch already answered are reused, not sent (`policy`)."""
    stderr = stderr or sys.stderr
    if sandbox is not None and sandbox != IN_PROCESS:
        check_sandbox_url(sandbox)  # before reading anything
    require_manifest(manifest)
    loaded = load_manifest(manifest, env=env, sandbox_keys=sandbox is not None)
    for notice in loaded.notices:
        print(f"runner: {notice}", file=stderr)
    plan = select_jobs(loaded.plan, only, tags)
    plan = shards.select(plan, shard)  # the jobs this shard owns (all: unsharded)
    # Before anything is created: a sandbox must answer, and --out must take files.
    if sandbox is not None and sandbox != IN_PROCESS:
        require_sandbox(sandbox)
    if store is not None:
        check_store(store)
    prepare_out(out)
    options = _Options(argv, stderr, quiet, transport_factory, report=report, rate_store=store)
    with (
        lock.acquire(out, shards.lock_name(plan.name, shard)) as held,
        sandbox_urls(sandbox) as urls,
    ):
        if urls is not None:
            plan = point_at(plan, urls)
        endpoints = endpoints_of(plan, sandbox)
        if policy is not None:
            policy.check(plan)
        choices = (
            [] if policy is None else reuse.choose(plan, out, policy, sandboxed=sandbox is not None)
        )
        # Over a job cap only with what will be sent: exit 2, nothing created or sent.
        require_fit(reuse.sent_plan(plan, choices), allow_partial=allow_partial)
        started = datetime.now(UTC)
        batch = BatchDir.create(out, plan, now=started, batch_id=shards.batch_id(started, shard))
        batch.extra_info = {**shards.record(shard, only, tags), **rate_store.record(store)}
        held.note_batch(batch.batch_id)
        source = str(Path(os.path.abspath(plan.source)))
        try:
            batch.inputs = inputs.copy_inputs(batch.path, loaded.inputs)
            # batch.json from the start: a killed batch still says where its jobs are.
            batch.write_info(
                started=started, argv=options.argv, secrets=plan.secrets, endpoints=endpoints
            )
            batch.update_info({"git": git_info(manifest, exclude=out)})
            journal = Journal.create(batch.journal_path, plan, batch.batch_id)
            try:
                journal.set_meta("source", source)
                journal.set_meta(inputs.META_KEY, inputs.render(batch.inputs))
                done = reuse.apply(choices, plan, batch, journal, stderr=stderr, quiet=quiet)
                records = journal.load_records(plan) if done.reused else None
                options = dataclasses.replace(options, reuse_log=done.events)
                if sample:
                    canary.record(journal, reuse.sent_plan(plan, choices), sample)
            except BaseException:
                _close_quietly(journal.close)
                raise
        except BaseException:
            # Nothing was sent: leave no half-made batch (a full disk here is one line
            # from the command line, and the same command works once there is room).
            shutil.rmtree(batch.path, ignore_errors=True)
            raise
        hints = Hints.of(batch, endpoints, source)
        if on_batch is not None:
            on_batch(batch.path, plan.secrets)
        return _execute(plan, batch, journal, records, started, options, endpoints, hints)


# -- where a batch goes on -------------------------------------------------------------------

# States whose job may exist at the provider and is not finished there: their remote ids
# (or a submit that may have arrived) belong to the endpoint they were sent to.
_AT_ENDPOINT = frozenset(
    {
        State.SUBMITTING,
        State.QUEUED,
        State.RUNNING,
        State.PAUSED,
        State.FETCHING,
        State.SUBMIT_UNKNOWN,
    }
)


def remote_jobs(rows: Sequence[JobRow]) -> dict[str, int]:
    """provider → how many of its jobs live at its recorded endpoint."""
    counts: dict[str, int] = {}
    for row in rows:
        if row.state in _AT_ENDPOINT:
            counts[row.provider] = counts.get(row.provider, 0) + 1
    return counts


def _same(a: str | None, b: str | None) -> bool:
    return (a or "").rstrip("/") == (b or "").rstrip("/")


def choose_endpoints(
    recorded: Endpoints,
    providers: Sequence[str],
    *,
    sandbox: str | None,
    overrides: Sequence[tuple[str, str]],
    remote: Mapping[str, int],
    resume: str,
) -> Endpoints:
    """Where a resumed or cancelled batch sends each provider: where it ran (recorded),
    unless `--sandbox`/`--endpoint` re-point it. A provider whose jobs live at the recorded
    endpoint cannot move (their remote ids mean nothing elsewhere): UsageError, one line.
    An in-process `--sandbox` leaves `urls` to be filled when it starts. Pure."""
    urls = dict(recorded.urls)
    mode = recorded.sandbox
    moves: list[tuple[str, str, str]] = []  # (flag, provider, url)
    if sandbox is not None and not (sandbox == IN_PROCESS and mode == IN_PROCESS):
        flag = "--sandbox" if sandbox == IN_PROCESS else f"--sandbox {sandbox}"
        from runner.sandbox.server import sandbox_base_urls

        targets = {} if sandbox == IN_PROCESS else sandbox_base_urls(sandbox)
        moves += [(flag, name, targets.get(name, IN_PROCESS)) for name in providers]
        mode = sandbox
    for name, url in overrides:
        if name not in providers:
            raise UsageError(
                f"--endpoint {name}={url}: this batch has no provider {name!r} "
                f"(it has: {', '.join(providers)})"
            )
        moves.append((f"--endpoint {name}={url}", name, url))
    for flag, name, url in moves:
        old = recorded.urls.get(name)
        if old is not None and not _same(old, url) and remote.get(name, 0):
            n = remote[name]
            are = "job of this batch is" if n == 1 else "jobs of this batch are"
            raise UsageError(
                f"{flag}: {n} {name} {are} at {old} (remote ids there, or submits that "
                f"may have reached it), so {name} cannot move; continue where they are "
                f"with: {resume}"
            )
        if url != IN_PROCESS:
            urls[name] = url
    return Endpoints(urls, mode)


def _unfinished(rows: Sequence[JobRow]) -> int:
    return sum(not row.state.terminal for row in rows)


def _resume_command(path: Path) -> str:
    return f"runner resume {shlex.quote(str(path))}"


def _check_reachable(
    path: Path, recorded: Endpoints, chosen: Endpoints, rows: Sequence[JobRow], start_over: str
) -> None:
    """Refuse, in one line, a continuation that could only fail: the in-process sandbox
    the batch ran on is gone; the sandbox it ran against does not answer."""
    unfinished = _unfinished(rows)
    if not unfinished:
        return  # nothing will be sent
    if chosen.sandbox == IN_PROCESS and recorded.sandbox == IN_PROCESS:
        jobs = "job" if unfinished == 1 else "jobs"
        raise UsageError(
            f"{path} ran on an in-process sandbox, which ended with that run: its "
            f"{unfinished} unfinished {jobs} cannot be reached, and nothing was sent; "
            f"start over with: {start_over}"
        )
    if chosen.sandbox is None or chosen.sandbox == IN_PROCESS:
        return
    if _same(chosen.sandbox, recorded.sandbox):
        silence = sandbox_silence(chosen.sandbox)
        if silence is not None:
            raise UsageError(
                f"{path} ran against the sandbox at {chosen.sandbox}, which does not answer "
                f"({silence}); start it again there with: {sandbox_command(chosen.sandbox)}"
            )
    else:
        require_sandbox(chosen.sandbox)


@dataclasses.dataclass(frozen=True, slots=True)
class _Reopened:
    batch: BatchDir
    journal: Journal
    plan: Plan
    recorded: Endpoints
    endpoints: Endpoints
    hints: Hints
    fresh_sandbox: bool  # an in-process sandbox to start for this continuation


def _reopen(
    path: Path,
    sandbox: str | None,
    overrides: Sequence[tuple[str, str]],
    env: Mapping[str, str] | None,
    stderr: TextIO,
) -> _Reopened:
    """The batch at `path`, its journal, where it goes on, and the plan of its
    manifest.yaml and its copies of its `each` files, both checked against their recorded
    sha256 (keys from the environment again: they are never stored), restricted to the
    journal's jobs and pointed at those endpoints."""
    if sandbox is not None and sandbox != IN_PROCESS:
        check_sandbox_url(sandbox)
    for name, url in overrides:
        check_url(f"--endpoint {name}={url}", url)
    batch = BatchDir.open(path)
    try:
        journal = Journal.open(batch.journal_path)
    except JournalError as exc:
        raise UsageError(f"{path}: cannot continue this batch: {exc}") from exc
    try:
        meta = journal.meta()
        rows = journal.rows()
        recorded = Endpoints.from_info(batch.read_info())
        providers = sorted(recorded.urls) or sorted({row.provider for row in rows})
        hints = Hints.of(batch, recorded, meta.get("source"))
        chosen = choose_endpoints(
            recorded,
            providers,
            sandbox=sandbox,
            overrides=overrides,
            remote=remote_jobs(rows),
            resume=_resume_command(path),
        )
        _check_reachable(path, recorded, chosen, rows, hints.start_over)
        fresh = chosen.sandbox == IN_PROCESS and recorded.sandbox != IN_PROCESS
        try:  # the batch's own copies, never the files where the manifest was
            record, resolve = inputs.reopen(batch.path, meta, MANIFEST)
            loaded = parse_manifest(
                batch.manifest_path.read_bytes(),
                source=batch.manifest_path,  # problems name the copy resume reads
                env=env,
                sandbox_keys=chosen.sandbox is not None,
                resolve=resolve,
            )
            inputs.check_read(record, loaded.inputs)
        except InputError as exc:
            raise UsageError(f"{path}: cannot continue this batch: {exc}") from None
        for notice in loaded.notices:
            print(f"runner: {notice}", file=stderr)
        known = [row.job_id for row in rows]
        ids = {spec.id for spec in loaded.plan.jobs}
        missing = [job_id for job_id in known if job_id not in ids]
        if missing:
            raise UsageError(f"{path}: job {missing[0]!r} of this batch is not in its manifest")
        wanted = set(known)
        plan = dataclasses.replace(
            loaded.plan, jobs=tuple(j for j in loaded.plan.jobs if j.id in wanted)
        )
        plan = point_at(plan, {**{n: s.base_url for n, s in plan.providers.items()}, **chosen.urls})
    except BaseException:
        journal.close()
        raise
    batch = BatchDir(batch.path, secrets=plan.secrets)
    batch.inputs = record
    return _Reopened(batch, journal, plan, recorded, chosen, hints, fresh)


def resume_batch(
    path: Path,
    *,
    resubmit_unknown: bool = False,
    sandbox: str | None = None,
    endpoints: Sequence[tuple[str, str]] = (),
    argv: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stderr: TextIO | None = None,
    transport_factory: TransportFactory | None = None,
    quiet: bool = False,
    shard: shards.Shard | None = None,
    store: StoreConfig | None = None,
    on_batch: Callable[[Path, Sequence[str]], None] | None = None,
) -> int:
    """`runner resume DIR`: continue a batch from its journal in the same directory, at the
    endpoints it ran against (`sandbox` / `endpoints` re-point it while no job lives there).
    `on_batch`: told the batch directory once it is open (--json, --ping)."""
    options = _Options(argv, stderr or sys.stderr, quiet, transport_factory, resubmit_unknown)
    return _continue(
        path,
        sandbox,
        endpoints,
        env,
        dataclasses.replace(
            options, mode="resume", rate_store=store, shard=shard, on_batch=on_batch
        ),
    )


def cancel_batch(
    path: Path,
    *,
    sandbox: str | None = None,
    endpoints: Sequence[tuple[str, str]] = (),
    argv: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stderr: TextIO | None = None,
    transport_factory: TransportFactory | None = None,
    quiet: bool = False,
) -> int:
    """`runner cancel DIR`: cancel every remote job of a stopped batch still active, skip
    what was never submitted, and seal the directory. 0 unless a remote cancel failed."""
    return _continue(
        path,
        sandbox,
        endpoints,
        env,
        _Options(argv, stderr or sys.stderr, quiet, transport_factory, mode="cancel"),
    )


def retry_batch(
    path: Path,
    *,
    only: Sequence[str] = (),
    sandbox: str | None = None,
    endpoints: Sequence[tuple[str, str]] = (),
    argv: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stderr: TextIO | None = None,
    transport_factory: TransportFactory | None = None,
    quiet: bool = False,
    on_batch: Callable[[Path, Sequence[str]], None] | None = None,
) -> int:
    """`runner retry DIR`: a new attempt, in the same directory, of every job that failed,
    timed out or expired (of those named by `only`), then continue and seal as resume."""
    options = _Options(
        argv,
        stderr or sys.stderr,
        quiet,
        transport_factory,
        mode="retry",
        only=only,
        on_batch=on_batch,
    )
    return _continue(path, sandbox, endpoints, env, options)


def _continue(
    path: Path,
    sandbox: str | None,
    overrides: Sequence[tuple[str, str]],
    env: Mapping[str, str] | None,
    options: _Options,
) -> int:
    path = resolve_batch_dir(path)
    real = path.resolve()
    recorded_info = BatchDir(real).read_info()
    recorded_shard = shards.recorded(recorded_info)
    shards.check_resumed_as(path, recorded_shard, options.shard)
    if options.rate_store is None:  # the store it ran with, unless given again
        store = rate_store.from_options(None, os.environ if env is None else env, recorded_info)
        options = dataclasses.replace(options, rate_store=store)
    if options.rate_store is not None:
        check_store(options.rate_store)
    with lock.acquire(
        real.parent.parent, shards.lock_name(real.parent.name, recorded_shard)
    ) as held:
        held.note_batch(real.name)
        reopened = _reopen(path, sandbox, overrides, env, options.stderr)
        batch, journal, plan = reopened.batch, reopened.journal, reopened.plan
        batch.extra_info = {**shards.carry(recorded_info), **rate_store.record(options.rate_store)}
        endpoints, hints = reopened.endpoints, reopened.hints
        with contextlib.ExitStack() as stack:
            try:
                if options.mode == "retry":
                    start_attempts(
                        batch, journal, options.only, stderr=options.stderr, quiet=options.quiet
                    )
                started = _started(batch)
                fresh = IN_PROCESS if reopened.fresh_sandbox else None
                urls = stack.enter_context(sandbox_urls(fresh))
                if urls is not None:
                    plan = point_at(plan, urls)
                    endpoints = endpoints_of(plan, IN_PROCESS)
                if endpoints != reopened.recorded:
                    _record_endpoints(batch, endpoints, started, options.argv, plan.secrets)
                    hints = Hints.of(batch, endpoints, journal.meta().get("source"))
                records = journal.load_records(plan)
                _repair_outcomes(batch, records)
                reuse.repair(batch, journal, records)  # a run killed while reusing
            except BaseException:
                journal.close()
                raise
            if options.on_batch is not None:
                options.on_batch(batch.path, plan.secrets)
            return _execute(plan, batch, journal, records, started, options, endpoints, hints)


def _record_endpoints(
    batch: BatchDir,
    endpoints: Endpoints,
    started: datetime,
    argv: Sequence[str],
    secrets: Sequence[str],
) -> None:
    """A re-point is written down before any request goes there: batch.json keeps every
    other field; a batch without one (an older runner's) gets it now."""
    document = batch.read_info()
    if document is None:
        batch.write_info(started=started, argv=argv, secrets=secrets, endpoints=endpoints)
        return
    document.update(endpoints.as_info())
    write_atomic(batch.path / BATCH, canonical_json(document), fsync=True)


def _repair_outcomes(batch: BatchDir, records: Sequence[JobRecord]) -> None:
    """A job whose submit reply was already final is journaled (remote id first) before
    its job.json is written: write what a kill in between left out."""
    for record in records:
        done = record.state.terminal and record.state is not State.SUCCEEDED
        if done and not (batch.job_dir(record.spec.id).path / OUTCOME).exists():
            batch.job_dir(record.spec.id).write_outcome(record)


def _started(batch: BatchDir) -> datetime:
    """The batch's original start: batch.json if a run finished it, else its id."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        text = json.loads((batch.path / BATCH).read_text("utf-8"))["started"]
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    with contextlib.suppress(ValueError):
        return datetime.strptime(batch.batch_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return datetime.now(UTC)


def _execute(
    plan: Plan,
    batch: BatchDir,
    journal: Journal,
    records: list[JobRecord] | None,
    started: datetime,
    options: _Options,
    endpoints: Endpoints,
    hints: Hints,
) -> int:
    """Drive the engine with journal, log and console attached; seal the directory."""
    stderr = options.stderr
    clock = time.monotonic()
    try:
        log = BatchLog(batch.log_path, batch_id=batch.batch_id, secrets=plan.secrets)
    except StoreError as exc:  # nothing has run yet: the one line, and the journal closed
        _close_quietly(journal.close)
        return _store_failed(exc, stderr, hints)
    console = Console(stream=stderr, quiet=options.quiet, secrets=plan.secrets)
    signals = _Signals(journal, log, console, hints)
    try:
        counts = journal.counts()
        event = {
            "run": "batch.started",
            "resume": "batch.resumed",
            "cancel": "batch.cancelling",
            "retry": "batch.retrying",
        }
        log.logger.info(
            event[options.mode],
            name=plan.name,
            jobs=len(plan.jobs),
            counts=counts,
            argv=[redact(arg, plan.secrets) for arg in options.argv],
            limits={name: s.limits.origins() for name, s in sorted(plan.providers.items())},
        )
        log_plan(log, plan)  # limits and estimate, for runner report
        reuse.log_events(log, options.reuse_log)

        def notify(event: str, fields: Mapping[str, Any]) -> None:
            log.logger.warning(event, **fields)
            console.notice(
                f"runner: {fields['message']}",
                error=event in ("provider.stopped", "provider.no_cancel", "budget.reached"),
            )

        recorders: list[Recorder] = [journal, LogRecorder(log), console]

        def drive_once(phase: list[JobRecord] | None) -> tuple[EngineResult, Engine]:
            clients = build_clients(
                plan,
                transport_factory=options.transport_factory or make_transport,
                console=console,
            )
            for name, provider_client in clients.items():
                provider_client.gate.on_pause = _pause_reporter(name, log, console)
            sampler = LoadSampler(log, {n: c.gate for n, c in clients.items()})
            watch: Watch = together(signals, sampler)
            if options.rate_store is not None:
                watch = rate_store.watching(
                    rate_store.attach(clients, options.rate_store),
                    watch,
                    _store_lost(log, console, signals),
                )
            return anyio.run(
                lambda: drive(
                    plan,
                    batch,
                    clients=clients,
                    recorders=recorders,
                    records=phase,
                    stderr=stderr,
                    notify=notify,
                    watch=watch,
                    resubmit_unknown=options.resubmit_unknown,
                    cancel=options.mode == "cancel",
                    judge=judge,
                    budget=spending,
                )
            )

        def control(phase: list[JobRecord]) -> Engine:  # sends nothing: the canary's moves
            return Engine(
                plan,
                clients={},
                adapters={},
                output=batch,
                recorders=recorders,
                records=phase,
                notify=notify,
            )

        try:
            console.start(len(plan.jobs), counts)
            every = records if records is not None else journal.load_records(plan)
            judge = judge_for(batch)
            spending = spending_for(plan, batch, every)
            if options.mode == "cancel":
                result, engine = drive_once(records)
            else:
                result, engine = canary.run_phases(
                    drive_once,
                    control,
                    journal,
                    every,
                    stopped=lambda: signals.code is not None,
                    stderr=stderr,
                    retry_hint=(
                        f"runner retry {shlex.quote(str(batch.path))}" if hints.resume else None
                    ),
                )
            journal.flush()
            code = _code(options, signals, result, engine)
            counts = journal.counts()
            batch.finish(
                counts=counts,
                exit_code=int(code),
                started=started,
                ended=datetime.now(UTC),
                argv=list(options.argv),
                secrets=list(plan.secrets),
                remote_ids=journal.remote_ids(),
                endpoints=endpoints,
                limits=engine.limits,
            )
        except Exception as exc:  # a bug, or the disk: the journal holds what was done
            return _internal_error(exc, plan, batch, log, console, stderr, hints)
        _report(plan, batch, log, console, engine, signals, counts, code, clock, options, hints)
        return int(code)
    finally:
        # Each closes whatever happened before: a disk that refused a write refuses the
        # closing flush too, and that was already reported once.
        for close in (console.close, journal.close, log.close):
            _close_quietly(close)
        if options.report is not None:
            options.report(batch.path, plan.secrets)


def _store_lost(log: BatchLog, console: Console, signals: _Signals) -> Callable[[str], None]:
    """The one line when the shared rate store is lost, and the exit it leads to
    (ExitCode.RATE_STORE_LOST: state saved, `runner resume` continues)."""

    def lost(message: str) -> None:
        log.logger.error("rate_store.lost", message=message)
        console.notice(f"runner: {message}", error=True)
        if signals.code is None:
            signals.name, signals.code = "the loss of the rate store", ExitCode.RATE_STORE_LOST

    return lost


def _close_quietly(close: Callable[[], None]) -> None:
    with contextlib.suppress(StoreError, OSError):
        close()


def storage_failure(exc: BaseException) -> StoreError | None:
    """The StoreError behind `exc` (a task group's wrapping looked through), or one made of
    an OSError that names its file (a write outside the store's own wrappers); None for
    anything else, which is a bug."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = storage_failure(inner)
            if found is not None:
                return found
        return None
    if isinstance(exc, OSError) and exc.filename is not None:
        return store_error(Path(os.fsdecode(exc.filename)), exc)
    return None


def _store_failed(error: StoreError, stderr: TextIO, hints: Hints) -> int:
    """The one line for a file the disk refused, with what to do and how to go on: the
    journal was rolled back to its last commit, so `runner resume` continues from there."""
    if hints.resume is not None:
        step = f"{error.remedy}, then: {hints.resume}"
    else:
        step = (
            f"{error.remedy}; the in-process sandbox ended with this run, so start over "
            f"with: {hints.start_over}"
        )
    with contextlib.suppress(OSError):  # stderr on the same full disk: nothing else to say
        print(f"runner: {error}; {step}", file=stderr, flush=True)
    return int(ExitCode.INTERNAL)


def _crash_file(trace: str) -> str:
    """Where the traceback went when the batch's log cannot take it (a temporary file)."""
    try:
        fd, name = tempfile.mkstemp(prefix="runner-crash-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(trace)
    except OSError as exc:
        return f"the traceback could not be written ({exc.strerror or exc})"
    return f"the traceback is in {shlex.quote(name)}"


def _code(options: _Options, signals: _Signals, result: EngineResult, engine: Engine) -> ExitCode:
    if signals.code is not None:
        return signals.code
    if options.mode == "cancel":
        return ExitCode.JOBS_FAILED if engine.cancel_failures else ExitCode.OK
    return exit_code(result)


def _internal_error(
    exc: Exception,
    plan: Plan,
    batch: BatchDir,
    log: BatchLog,
    console: Console,
    stderr: TextIO,
    hints: Hints,
) -> int:
    _close_quietly(console.close)
    failure = storage_failure(exc)
    if failure is not None:
        with contextlib.suppress(StoreError):  # the log itself may be what is full
            log.logger.error("batch.store_error", error=str(failure), exc_info=exc)
        return _store_failed(failure, stderr, hints)
    logged = log.failed is None
    if logged:
        try:
            log.logger.error(
                "batch.internal_error", error=f"{type(exc).__name__}: {exc}", exc_info=exc
            )
        except Exception:  # the disk, or anything else: the traceback goes elsewhere
            logged = False
    if logged:
        where = f"the traceback is in {shlex.quote(str(batch.log_path))}"
    else:  # log.jsonl cannot take it: a file in the temporary directory does
        where = _crash_file(redact("".join(traceback.format_exception(exc)), plan.secrets))
    cause: BaseException = exc
    while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
        cause = cause.exceptions[0]  # the task groups' wrapping says nothing to a person
    message = redact(f"{type(cause).__name__}: {cause}", plan.secrets)
    step = (
        f"the journal keeps every finished step: {hints.resume} continues"
        if hints.resume is not None
        else "the in-process sandbox ended with this run; start over with: " + hints.start_over
    )
    with contextlib.suppress(OSError):
        print(
            f"runner: internal error: {message}\nrunner: {where}; {step}", file=stderr, flush=True
        )
    return int(ExitCode.INTERNAL)


MAX_LISTED = 20  # jobs named one by one at the end of a run; the rest are counted


def unsucceeded_lines(
    records: Iterable[JobRecord], hints: Hints, *, status: str, limit: int = MAX_LISTED
) -> list[str]:
    """The end-of-run lines about jobs that did not succeed: each finished one with its
    error (the first `limit`, then a count), and the unfinished ones (left by a provider
    that stopped answering) as one line per provider, so a thousand jobs never make a
    thousand lines."""
    records = list(records)
    ended = [r for r in records if r.state.terminal and r.state is not State.SUCCEEDED]
    lines = [
        f"  {r.spec.id}: {r.state.value}" + (f": {r.error}" if r.error else "")
        for r in ended[:limit]
    ]
    if len(ended) > limit:
        lines.append(f"  … and {len(ended) - limit} more that did not succeed: {status}")
    unfinished: dict[str, Counter[str]] = {}
    for record in records:
        if not record.state.terminal:
            unfinished.setdefault(record.spec.provider, Counter())[record.state.value] += 1
    for provider, states in sorted(unfinished.items()):
        total = sum(states.values())
        where = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        then = f"; {hints.resume} continues them" if hints.resume else ""
        lines.append(f"  {provider}: {total} job(s) not finished ({where}){then}")
    return lines


def _status_command(batch: BatchDir) -> str:
    return f"runner status {shlex.quote(str(batch.path))}"


def _report(
    plan: Plan,
    batch: BatchDir,
    log: BatchLog,
    console: Console,
    engine: Engine,
    signals: _Signals,
    counts: Mapping[str, int],
    code: ExitCode,
    clock: float,
    options: _Options,
    hints: Hints,
) -> None:
    stderr = options.stderr
    elapsed = time.monotonic() - clock
    if signals.name is not None:
        log.logger.warning(
            "batch.interrupted", signal=signals.name, counts=dict(counts), exit_code=int(code)
        )
    else:
        log.logger.info(
            "batch.finished", counts=dict(counts), exit_code=int(code), limits=engine.limits
        )
    console.close()
    for failure in engine.cancel_failures:
        print(f"runner: {failure}", file=stderr)
    if signals.name is not None:
        print(
            f"runner: interrupted by {signals.name}; state saved. {hints.next_step()}",
            file=stderr,
        )
    else:  # what did not succeed, once more at the end (cron mails this)
        for text in unsucceeded_lines(
            engine.records.values(), hints, status=_status_command(batch)
        ):
            print(text, file=stderr)
    fetching = counts.get(State.FETCHING.value, 0)
    if options.mode == "cancel" and fetching and hints.resume is not None:
        print(
            f"runner: {fetching} job(s) had finished remotely and were not fetched; "
            f"{hints.resume} fetches them",
            file=stderr,
        )
    line = summary_line(
        plan.name, batch.batch_id, counts, elapsed=elapsed, path=batch.path, exit_code=int(code)
    )
    console.summary(line)
