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
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import anyio

from runner import inputs, lock
from runner.console import Console, summary_line
from runner.engine import Engine, EngineResult
from runner.errors import UsageError
from runner.exits import ExitCode
from runner.http import ProviderClient, Transport, make_transport
from runner.journal import Journal, JournalError
from runner.lifecycle import JobRecord, Recorder, State
from runner.limits import Gate, pool_size_for
from runner.log import BatchLog, LogRecorder
from runner.manifest import load_manifest, parse_manifest
from runner.plan import Plan
from runner.providers import ADAPTERS
from runner.providers.base import Reply
from runner.results import BATCH, MANIFEST, OUTCOME, BatchDir, redact
from runner.retry import start_attempts

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


def build_clients(
    plan: Plan, *, client: str | None = None, console: Console | None = None
) -> dict[str, ProviderClient]:
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
            transport=_counted(make_transport(pool, client=client), console),
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


# -- signals ---------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Signals:
    """Watches SIGINT/SIGTERM while the engine runs: the first stops it gracefully, a
    second exits at once (every transition is already committed; polls are flushed)."""

    journal: Journal
    log: BatchLog
    console: Console
    batch: BatchDir
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
                        f"Continue with: runner resume {self.batch.path}",
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
    client: str | None
    resubmit_unknown: bool = False
    mode: str = "run"  # run | resume | cancel | retry
    only: Sequence[str] = ()  # retry: the jobs named by --only


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
    quiet: bool = False,
) -> int:
    """`runner run`: every job of the manifest to a terminal state; 0 if all succeeded."""
    stderr = stderr or sys.stderr
    if sandbox is not None and sandbox != IN_PROCESS:
        check_sandbox_url(sandbox)  # before reading anything
    loaded = load_manifest(manifest, env=env, sandbox_keys=sandbox is not None)
    for notice in loaded.notices:
        print(f"runner: {notice}", file=stderr)
    plan = select_jobs(loaded.plan, only, tags)
    options = _Options(argv, stderr, quiet, client)
    with lock.acquire(out, plan.name) as held, sandbox_urls(sandbox) as urls:
        if urls is not None:
            plan = point_at(plan, urls)
        started = datetime.now(UTC)
        batch = BatchDir.create(out, plan, now=started)
        held.note_batch(batch.batch_id)
        try:
            batch.inputs = inputs.copy_inputs(batch.path, loaded.inputs)
        except BaseException:
            shutil.rmtree(batch.path, ignore_errors=True)  # nothing was sent: leave no batch
            raise
        journal = Journal.create(batch.journal_path, plan, batch.batch_id)
        journal.set_meta("source", str(Path(os.path.abspath(plan.source))))
        journal.set_meta(inputs.META_KEY, inputs.render(batch.inputs))
        return _execute(plan, batch, journal, None, started, options)


def _batch_path(path: Path) -> Path:
    """`results/<name>/latest` names the batch it points to."""
    return path.parent / os.readlink(path) if path.is_symlink() else path


def _reopen(
    path: Path, sandbox: str | None, env: Mapping[str, str] | None, stderr: TextIO
) -> tuple[BatchDir, Journal, Plan]:
    """The batch at `path`, its journal, and the plan of its manifest.yaml and its copies of
    its `each` files, both checked against their recorded sha256 (keys from the environment
    again: they are never stored), restricted to the journal's jobs."""
    if sandbox == IN_PROCESS:
        raise UsageError(
            "--sandbox needs the URL of the sandbox the batch ran against "
            "(an in-process sandbox does not outlive its run)"
        )
    if sandbox is not None:
        check_sandbox_url(sandbox)
    batch = BatchDir.open(path)
    try:
        journal = Journal.open(batch.journal_path)
    except JournalError as exc:
        raise UsageError(f"{path}: cannot continue this batch: {exc}") from exc
    try:
        try:  # the batch's own copies, never the files where the manifest was
            record, resolve = inputs.reopen(batch.path, journal.meta(), MANIFEST)
            loaded = parse_manifest(
                batch.manifest_path.read_bytes(),
                source=batch.manifest_path,
                env=env,
                sandbox_keys=sandbox is not None,
                resolve=resolve,
            )
            inputs.check_read(record, loaded.inputs)
        except inputs.InputError as exc:
            raise UsageError(f"{path}: cannot continue this batch: {exc}") from None
        for notice in loaded.notices:
            print(f"runner: {notice}", file=stderr)
        known = [row.job_id for row in journal.rows()]
        ids = {spec.id for spec in loaded.plan.jobs}
        missing = [job_id for job_id in known if job_id not in ids]
        if missing:
            raise UsageError(f"{path}: job {missing[0]!r} of this batch is not in its manifest")
        wanted = set(known)
        plan = dataclasses.replace(
            loaded.plan, jobs=tuple(j for j in loaded.plan.jobs if j.id in wanted)
        )
    except BaseException:
        journal.close()
        raise
    batch = BatchDir(batch.path, secrets=plan.secrets)
    batch.inputs = record
    return batch, journal, plan


def resume_batch(
    path: Path,
    *,
    resubmit_unknown: bool = False,
    sandbox: str | None = None,
    argv: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stderr: TextIO | None = None,
    client: str | None = None,
    quiet: bool = False,
) -> int:
    """`runner resume DIR`: continue a batch from its journal in the same directory."""
    return _continue(
        path,
        sandbox,
        env,
        _Options(argv, stderr or sys.stderr, quiet, client, resubmit_unknown, "resume"),
    )


def cancel_batch(
    path: Path,
    *,
    sandbox: str | None = None,
    argv: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stderr: TextIO | None = None,
    client: str | None = None,
    quiet: bool = False,
) -> int:
    """`runner cancel DIR`: cancel every remote job of a stopped batch still active, skip
    what was never submitted, and seal the directory. 0 unless a remote cancel failed."""
    return _continue(
        path, sandbox, env, _Options(argv, stderr or sys.stderr, quiet, client, mode="cancel")
    )


def retry_batch(
    path: Path,
    *,
    only: Sequence[str] = (),
    sandbox: str | None = None,
    argv: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    stderr: TextIO | None = None,
    client: str | None = None,
    quiet: bool = False,
) -> int:
    """`runner retry DIR`: a new attempt, in the same directory, of every job that failed,
    timed out or expired (of those named by `only`), then continue and seal as resume."""
    options = _Options(argv, stderr or sys.stderr, quiet, client, mode="retry", only=only)
    return _continue(path, sandbox, env, options)


def _continue(
    path: Path, sandbox: str | None, env: Mapping[str, str] | None, options: _Options
) -> int:
    path = _batch_path(path)
    real = path.resolve()
    if not (real / "manifest.yaml").is_file():
        BatchDir.open(path)  # raises NotABatchDirError with the usual message
    with lock.acquire(real.parent.parent, real.parent.name) as held:
        held.note_batch(real.name)
        batch, journal, plan = _reopen(path, sandbox, env, options.stderr)
        if options.mode == "retry":
            try:
                start_attempts(
                    batch, journal, options.only, stderr=options.stderr, quiet=options.quiet
                )
            except BaseException:
                journal.close()
                raise
        with sandbox_urls(sandbox) as urls:
            if urls is not None:
                plan = point_at(plan, urls)
            records = journal.load_records(plan)
            _repair_outcomes(batch, records)
            return _execute(plan, batch, journal, records, _started(batch), options)


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
) -> int:
    """Drive the engine with journal, log and console attached; seal the directory."""
    stderr = options.stderr
    clock = time.monotonic()
    log = BatchLog(batch.log_path, batch_id=batch.batch_id, secrets=plan.secrets)
    console = Console(stream=stderr, quiet=options.quiet, secrets=plan.secrets)
    signals = _Signals(journal, log, console, batch)
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
        )

        def notify(event: str, fields: Mapping[str, Any]) -> None:
            log.logger.warning(event, **fields)
            console.notice(f"runner: {fields['message']}", error=event == "provider.stopped")

        try:
            console.start(len(plan.jobs), counts)
            clients = build_clients(plan, client=options.client, console=console)
            for name, provider_client in clients.items():
                provider_client.gate.on_pause = _pause_reporter(name, log, console)
            result, engine = anyio.run(
                lambda: drive(
                    plan,
                    batch,
                    clients=clients,
                    recorders=[journal, LogRecorder(log), console],
                    records=records,
                    stderr=stderr,
                    notify=notify,
                    watch=signals,
                    resubmit_unknown=options.resubmit_unknown,
                    cancel=options.mode == "cancel",
                )
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
            )
        except Exception as exc:  # a bug, or the disk: the journal holds what was done
            return _internal_error(exc, plan, batch, log, console, stderr)
        _report(plan, batch, log, console, engine, signals, counts, code, clock, options)
        return int(code)
    finally:
        console.close()
        journal.close()
        log.close()


def _code(options: _Options, signals: _Signals, result: EngineResult, engine: Engine) -> ExitCode:
    if signals.code is not None:
        return signals.code
    if options.mode == "cancel":
        return ExitCode.JOBS_FAILED if engine.cancel_failures else ExitCode.OK
    return exit_code(result)


def _internal_error(
    exc: Exception, plan: Plan, batch: BatchDir, log: BatchLog, console: Console, stderr: TextIO
) -> int:
    with contextlib.suppress(Exception):
        log.logger.error("batch.internal_error", error=f"{type(exc).__name__}: {exc}", exc_info=exc)
    console.close()
    cause: BaseException = exc
    while isinstance(cause, BaseExceptionGroup) and len(cause.exceptions) == 1:
        cause = cause.exceptions[0]  # the task groups' wrapping says nothing to a person
    message = redact(f"{type(cause).__name__}: {cause}", plan.secrets)
    print(
        f"runner: internal error: {message}\n"
        f"runner: the traceback is in {batch.log_path}; the journal keeps every finished "
        f"step: runner resume {batch.path} continues",
        file=stderr,
        flush=True,
    )
    return int(ExitCode.INTERNAL)


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
) -> None:
    stderr = options.stderr
    elapsed = time.monotonic() - clock
    if signals.name is not None:
        log.logger.warning(
            "batch.interrupted", signal=signals.name, counts=dict(counts), exit_code=int(code)
        )
    else:
        log.logger.info("batch.finished", counts=dict(counts), exit_code=int(code))
    console.close()
    for failure in engine.cancel_failures:
        print(f"runner: {failure}", file=stderr)
    if signals.name is not None:
        print(
            f"runner: interrupted by {signals.name}; state saved. "
            f"Continue with: runner resume {batch.path}",
            file=stderr,
        )
    else:  # what did not succeed, once more at the end (cron mails this)
        for record in engine.records.values():
            if record.state is not State.SUCCEEDED:
                detail = f": {record.error}" if record.error else ""
                print(f"  {record.spec.id}: {record.state.value}{detail}", file=stderr)
    fetching = counts.get(State.FETCHING.value, 0)
    if options.mode == "cancel" and fetching:
        print(
            f"runner: {fetching} job(s) had finished remotely and were not fetched; "
            f"runner resume {batch.path} fetches them",
            file=stderr,
        )
    line = summary_line(
        plan.name, batch.batch_id, counts, elapsed=elapsed, path=batch.path, exit_code=int(code)
    )
    console.summary(line)
