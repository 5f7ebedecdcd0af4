"""Incremental runs: which jobs an earlier batch already answered, and taking its files.

A job is reused when an earlier batch of the same manifest name (`results/<name>/`) holds a
job that ran (was submitted, not itself reused) and succeeded with the same fingerprint
(runner.fingerprint), against the same kind of endpoint (a sandbox run reuses only sandbox
results; a real run only results from the same base URL), younger than the job's `max_age`,
and whose files verify: against SHA256SUMS in a sealed batch; in a batch still running or
never finished, against its job.json's file list (no checksum was written yet), and that
still meets the job's current `expect` (its files judged again: `expect` is not in the
fingerprint, so a tightened check sends only the jobs whose old result misses it). The
newest such job wins; a shard's batch (`<id>-sKofN`) is an earlier batch like any other.
Its files are hard-linked into the new batch (copied where the filesystem cannot link);
job.json says `reused_from`; the journal moves the job planned → succeeded by the `reused`
event, so nothing is sent for it, now or by `runner resume` / `retry`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from runner.batch.expect import check as check_expect
from runner.durations import format_duration
from runner.errors import UsageError, store_error
from runner.fingerprint import job_fingerprint
from runner.lifecycle import Event, JobRecord, State, advance
from runner.plan import JobSpec, Plan
from runner.remote import FetchReport
from runner.store.journal import Journal
from runner.store.jsonio import canonical_json, temp_for
from runner.store.locate import batches_in
from runner.store.lock import probe
from runner.store.log import BatchLog
from runner.store.results import (
    BATCH,
    JOBS,
    OUTCOME,
    BatchDir,
    file_sha256,
    files_on_disk,
    read_sums,
    write_atomic,
)

REUSED_FROM = "reused_from"  # job.json, the journal's notes and batch.json's `reused`
MISSES_EXPECT = "misses its expectation"  # a source whose files fail the job's current `expect`
_RUN_ONLY = ("attempt", "previous_attempts")  # job.json fields about the source's own attempts


@dataclass(frozen=True, slots=True)
class Policy:
    """What the command line asks: `--force` (every job), `--force ID`, `--max-age`."""

    force_all: bool = False
    force: frozenset[str] = frozenset()
    max_age: float | None = None  # seconds; overrides every job's `max_age`

    def forced(self, job_id: str) -> bool:
        return self.force_all or job_id in self.force

    def max_age_of(self, spec: JobSpec) -> float | None:
        return self.max_age if self.max_age is not None else spec.max_age

    def check(self, plan: Plan) -> None:
        """UsageError for a `--force ID` that names no job of `plan`."""
        ids = {spec.id for spec in plan.jobs}
        unknown = sorted(self.force - ids)
        if unknown:
            raise UsageError(
                f"--force {unknown[0]}: no job {unknown[0]!r} in {plan.source}; "
                "give a job id, or --force alone to send every job again"
            )


@dataclass(frozen=True, slots=True)
class Source:
    """A succeeded job of an earlier batch that a new job can take its files from."""

    batch: Path
    job_id: str
    started: datetime | None
    document: Mapping[str, Any] = dataclasses.field(repr=False)  # its job.json

    @property
    def batch_id(self) -> str:
        return self.batch.name


@dataclass(frozen=True, slots=True)
class Choice:
    """One job's decision: reuse `source`, or send it (`source` None) because of `why`."""

    spec: JobSpec
    fingerprint: str
    source: Source | None
    why: str
    refused: tuple[str, ...] = ()  # earlier results passed over, each with its reason

    @property
    def reused(self) -> bool:
        return self.source is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.spec.id,
            "fingerprint": self.fingerprint,
            "action": "reuse" if self.reused else "send",
            REUSED_FROM: None
            if self.source is None
            else {"batch": self.source.batch_id, "job": self.source.job_id},
            "why": self.why,
            "refused": list(self.refused),
        }


INCREMENTAL = Policy()  # `runner run` without --force or --max-age


# -- finding ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Batch:
    """One earlier batch as the search reads it (each file read once, on demand)."""

    path: Path
    info: Mapping[str, Any]
    running: bool
    _jobs: dict[str, list[tuple[str, dict[str, Any]]]] | None = None
    _sums: dict[str, dict[str, str]] | None = None  # job id -> {path: sha256}
    _sums_read: bool = False

    def started(self) -> datetime | None:
        text = self.info.get("started")
        with contextlib.suppress(TypeError, ValueError):
            return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        with contextlib.suppress(ValueError):
            moment = datetime.strptime(self.path.name[:16], "%Y%m%dT%H%M%SZ")
            return moment.replace(tzinfo=UTC)
        return None

    def jobs(self) -> dict[str, list[tuple[str, dict[str, Any]]]]:
        """fingerprint → [(job id, job.json)] of the jobs here that ran and succeeded."""
        if self._jobs is None:
            self._jobs = {}
            root = self.path / JOBS
            for job in sorted(root.iterdir()) if root.is_dir() else []:
                document = _read_json(job / OUTCOME)
                if (
                    document is None
                    or document.get("state") != State.SUCCEEDED.value
                    or REUSED_FROM in document  # the batch that ran it is the source
                    or not isinstance(document.get("fingerprint"), str)
                ):
                    continue
                self._jobs.setdefault(document["fingerprint"], []).append((job.name, document))
        return self._jobs

    def sums(self, job_id: str) -> dict[str, str] | None:
        """SHA256SUMS's lines for `job_id`'s files; None when the batch has none (running,
        or never finished). Read once per batch, indexed by job."""
        if not self._sums_read:
            every = None if self.running else read_sums(self.path)
            if every is not None:
                self._sums = {}
                for rel, digest in every.items():
                    parts = rel.split("/", 2)
                    if parts[0] == JOBS and len(parts) == 3:
                        self._sums.setdefault(parts[1], {})[rel] = digest
            self._sums_read = True
        return None if self._sums is None else self._sums.get(job_id, {})

    def same_endpoint(self, plan: Plan, provider: str, sandboxed: bool) -> bool:
        """Results of a sandbox only for a sandbox run; real ones only from the same URL."""
        if sandboxed:
            return self.info.get("sandbox") is not None
        if self.info.get("sandbox") is not None:
            return False
        urls = self.info.get("endpoints")
        settings = plan.providers.get(provider)
        if not isinstance(urls, dict) or settings is None:
            return False
        return str(urls.get(provider, "")).rstrip("/") == settings.base_url.rstrip("/")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) else None


def verify_job(batch: Path, job_id: str, sums: Mapping[str, str] | None) -> str | None:
    """Why the files of `batch`'s job `job_id` cannot be trusted, or None when they verify:
    every file against its SHA256SUMS lines (`sums`: path under the batch -> sha256), or
    without them, job.json's `files` list against the disk."""
    job = batch / JOBS / job_id
    on_disk = {f"{JOBS}/{job_id}/{rel}" for rel in files_on_disk(job)}
    if sums is not None:
        listed = set(sums)
        for rel in sorted(listed | on_disk):
            if rel not in on_disk:
                return f"{rel} missing"
            if rel not in listed:
                return f"{rel} not listed in SHA256SUMS"
            if file_sha256(batch / rel) != sums[rel]:
                return f"{rel} changed (sha256 differs)"
        return None
    document = _read_json(job / OUTCOME) or {}
    files = document.get("files")
    if not isinstance(files, list):
        return f"{JOBS}/{job_id}/{OUTCOME} has no files list"
    actual = set(files_on_disk(job / "files"))
    for name in sorted(set(map(str, files)) ^ actual):
        where = "missing" if name not in actual else f"not listed in {OUTCOME}"
        return f"{JOBS}/{job_id}/files/{name} {where}"
    return None


def misses_expect(
    spec: JobSpec, batch: Path, job_id: str, document: Mapping[str, Any]
) -> str | None:
    """Why `batch`'s job `job_id` (its job.json `document`) fails `spec`'s current `expect`,
    or None: its files judged again as a finished job is (runner.batch.expect), so a check
    tightened since it ran sends the job, and one it still passes reuses it. `expect` is
    not in the fingerprint: tightening it costs nothing when the old result passes."""
    if spec.expect is None:
        return None
    counts = document.get("counts")
    items = counts.get("items") if isinstance(counts, dict) else None
    report = FetchReport(items=items if isinstance(items, int) else 0, outcome=document)
    try:
        reason = check_expect(spec.expect, report, batch / JOBS / job_id)
    except (OSError, ValueError) as exc:
        reason = f"the results could not be read to check expect: {exc}"
    return None if reason is None else f"{MISSES_EXPECT} ({reason})"


def earlier_batches(root: Path, name: str, *, exclude: Path | None = None) -> list[_Batch]:
    """The batches under `root/name/` newest first (not `exclude`), with their batch.json;
    a batch without one cannot say where it ran and is left out."""
    holder = probe(root, name)
    running_id = holder.batch_id if holder is not None else None
    found = []
    for path in batches_in(root / name):
        if exclude is not None and path.resolve() == exclude.resolve():
            continue
        info = _read_json(path / BATCH)
        if info is None:
            continue
        found.append(_Batch(path, info, running=path.name == running_id))
    return found


def choose(
    plan: Plan,
    root: Path,
    policy: Policy = INCREMENTAL,
    *,
    sandboxed: bool,
    now: datetime | None = None,
    exclude: Path | None = None,
    batches: Sequence[_Batch] | None = None,
) -> list[Choice]:
    """Every job of `plan`, in plan order, with what `runner run` does with it. Reads the
    newest batch first and stops as soon as every job is decided. Pure but for reading."""
    now = now or datetime.now(UTC)
    if batches is None:
        batches = earlier_batches(root, plan.name, exclude=exclude)
    decided: dict[str, Choice] = {}
    open_jobs: list[tuple[JobSpec, str]] = []
    refused: dict[str, list[str]] = {}
    for spec in plan.jobs:
        fingerprint = job_fingerprint(spec)
        if policy.forced(spec.id):
            flag = "--force" if policy.force_all else f"--force {spec.id}"
            decided[spec.id] = Choice(spec, fingerprint, None, f"forced ({flag})")
        else:
            open_jobs.append((spec, fingerprint))
    verified: dict[tuple[Path, str], str | None] = {}
    for batch in batches:
        if not open_jobs:
            break
        started = batch.started()
        still: list[tuple[JobSpec, str]] = []
        for spec, fingerprint in open_jobs:
            limit = policy.max_age_of(spec)
            age = (now - started).total_seconds() if started is not None else None
            if limit is not None and (age is None or age > limit):
                # Batches are newest first: every older one is older still.
                decided[spec.id] = Choice(
                    spec,
                    fingerprint,
                    None,
                    f"no earlier result younger than {format_duration(limit)} (max_age)",
                    tuple(refused.get(spec.id, ())),
                )
                continue
            source = None
            if batch.same_endpoint(plan, spec.provider, sandboxed):
                for job_id, document in batch.jobs().get(fingerprint, []):
                    key = (batch.path, job_id)
                    if key not in verified:
                        verified[key] = verify_job(batch.path, job_id, batch.sums(job_id))
                    problem = verified[key] or misses_expect(spec, batch.path, job_id, document)
                    if problem is None:
                        source = Source(batch.path, job_id, started, document)
                        break
                    refused.setdefault(spec.id, []).append(f"{batch.path.name}: {problem}")
            if source is None:
                still.append((spec, fingerprint))
                continue
            why = f"same request succeeded in {batch.path.name}" + (
                f" (job {source.job_id})" if source.job_id != spec.id else ""
            )
            decided[spec.id] = Choice(
                spec, fingerprint, source, why, tuple(refused.get(spec.id, ()))
            )
        open_jobs = still
    for spec, fingerprint in open_jobs:
        why = "no earlier result of this request"
        if any(MISSES_EXPECT in problem for problem in refused.get(spec.id, ())):
            why = f"earlier result {MISSES_EXPECT}"
        elif refused.get(spec.id):
            why = "no earlier result that verifies"
        decided[spec.id] = Choice(spec, fingerprint, None, why, tuple(refused.get(spec.id, ())))
    return [decided[spec.id] for spec in plan.jobs]


# -- taking the files ------------------------------------------------------------------------


def link_files(source: Path, target: Path) -> tuple[int, int]:
    """Every file under `source` (but job.json and runner temporaries) at the same place
    under `target`: hard-linked, or copied (to a temporary, then renamed) where the
    filesystem cannot link. Returns (linked, copied)."""
    linked = copied = 0
    for rel in files_on_disk(source):
        if rel == OUTCOME:
            continue
        src, dst = source / rel, target / rel
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_error(dst.parent, exc) from exc
        try:
            os.link(src, dst)
            linked += 1
            continue
        except OSError:
            pass  # another filesystem (EXDEV), no links allowed (EPERM), too many (EMLINK)
        tmp = temp_for(dst)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise store_error(dst, exc) from exc
        copied += 1
    return linked, copied


def outcome_of(choice: Choice) -> dict[str, Any]:
    """The new batch's job.json for a reused job: the source's, naming this job, and where
    it came from (its own attempts' fields dropped: those files stayed there)."""
    assert choice.source is not None
    document = {k: v for k, v in choice.source.document.items() if k not in _RUN_ONLY}
    document.update(
        {
            "id": choice.spec.id,
            "tags": list(choice.spec.tags),
            REUSED_FROM: {"batch": choice.source.batch_id, "job": choice.source.job_id},
        }
    )
    return document


@dataclass(frozen=True, slots=True)
class Logged:
    """One log event of the reuse step, written once the batch's log has started."""

    level: str  # info | warning
    event: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Applied:
    reused: int
    events: tuple[Logged, ...]


def apply(
    choices: Iterable[Choice],
    plan: Plan,
    batch: BatchDir,
    journal: Journal,
    *,
    stderr: TextIO,
    quiet: bool,
) -> Applied:
    """Take the files of every reused job into `batch`, write its job.json, and journal it
    succeeded (`reused`). Returns how many, and the log events of every decision."""
    choices = list(choices)
    reused: dict[str, str] = {}
    events: list[Logged] = []
    for choice in choices:
        job: dict[str, Any] = {"job_id": choice.spec.id, "provider": choice.spec.provider}
        for problem in choice.refused:
            events.append(Logged("warning", "job.reuse_refused", {**job, "reason": problem}))
            print(
                f"runner: {choice.spec.id}: not reusing {problem}; "
                + ("sending it" if choice.source is None else "using an older result"),
                file=stderr,
            )
        if choice.source is None:
            fields = {**job, "why": choice.why, "fingerprint": choice.fingerprint}
            events.append(Logged("info", "job.not_reused", fields))
            continue
        target = batch.job_dir(choice.spec.id).path
        linked, copied = link_files(choice.source.batch / JOBS / choice.source.job_id, target)
        document = outcome_of(choice)
        write_atomic(target / OUTCOME, canonical_json(document))  # last: the mark of a whole copy
        _journal_reuse(journal, JobRecord(choice.spec), document)
        reused[choice.spec.id] = choice.source.batch_id
        fields = {
            **job,
            "from_batch": choice.source.batch_id,
            "from_job": choice.source.job_id,
            "fingerprint": choice.fingerprint,
            "linked": linked,
            "copied": copied,
        }
        events.append(Logged("info", "job.reused", fields))
    if reused:
        batch.update_info({REUSED_FROM: dict(sorted(reused.items()))})
    if reused and not quiet:
        sent = len(choices) - len(reused)
        print(
            f"runner: {len(reused)} of {len(choices)} job(s) reused from earlier batches "
            f"(nothing sent for them); {sent} to send",
            file=stderr,
        )
    return Applied(len(reused), tuple(events))


def log_events(log: BatchLog, events: Iterable[Logged]) -> None:
    for logged in events:
        getattr(log.logger, logged.level)(logged.event, **logged.fields)


def _journal_reuse(journal: Journal, record: JobRecord, document: Mapping[str, Any]) -> None:
    """Journal `record` (planned) as reused from the batch `document` (its job.json) names."""
    source = document.get(REUSED_FROM)
    status = document.get("provider_status")
    record.state = advance(State.PLANNED, Event.REUSE)
    record.finished_at = time.time()
    record.raw_status = status if isinstance(status, str) else None
    record.partial = bool(document.get("partial"))
    record.notes = {REUSED_FROM: source["batch"] if isinstance(source, dict) else None}
    journal.noted(record, REUSED_FROM)
    journal.transition(record, Event.REUSE, State.PLANNED)


def repair(batch: BatchDir, journal: Journal, records: Sequence[JobRecord]) -> int:
    """Finish what a run killed while taking earlier results left (resume, retry, cancel):
    a planned job whose directory holds a reused job.json (written last, after every file)
    is journaled as reused; a planned job's directory without one holds only files half
    taken, and goes, so the job is sent into an empty directory. Returns the jobs finished."""
    finished = 0
    for record in records:
        if record.state is not State.PLANNED:
            continue
        path = batch.job_dir(record.spec.id).path
        if not path.exists():
            continue
        document = _read_json(path / OUTCOME)
        if document is not None and isinstance(document.get(REUSED_FROM), dict):
            _journal_reuse(journal, record, document)
            finished += 1
            continue
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise store_error(path, exc) from exc
    return finished


def sent_plan(plan: Plan, choices: Sequence[Choice]) -> Plan:
    """`plan` with only the jobs that will be sent (for estimates)."""
    keep = {c.spec.id for c in choices if not c.reused}
    return dataclasses.replace(plan, jobs=tuple(j for j in plan.jobs if j.id in keep))
