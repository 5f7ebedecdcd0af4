"""`runner merge`: the finished shard batches of one manifest made into one batch directory.

The shards must come from the same manifest and inputs (sha256), split the same selection
into the same N, be given once each, all be sealed and verify, and together hold every job
of the selection exactly once. The merged directory then holds what an unsharded run of the
same manifest against the same answers holds under `jobs/` and `attempts/` (those trees have
no timings and no remote ids), so its `SHA256SUMS` is the same file; batch.json sums the
shards' counts and names them (`merged_from`). It has no journal and no log of its own:
those stay in each shard's directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.batch import inputs
from runner.batch import shard as shards
from runner.batch.run import select_jobs
from runner.errors import InputError, UsageError
from runner.exits import ExitCode
from runner.lifecycle import State
from runner.manifest.loader import parse_manifest
from runner.plan import Plan
from runner.store import lock
from runner.store.locate import resolve_batch_dir
from runner.store.results import ATTEMPTS, INPUTS, JOBS, SUMS, BatchDir, Endpoints, check


@dataclass(frozen=True, slots=True)
class ShardBatch:
    path: Path
    shard: shards.Shard
    info: Mapping[str, Any]
    jobs: frozenset[str]  # the job directories under jobs/


@dataclass(frozen=True, slots=True)
class Merged:
    path: Path
    jobs: int
    counts: Mapping[str, int]
    exit_code: int


def _open(path: Path) -> ShardBatch:
    """One shard's sealed, verified batch; UsageError naming what is wrong with it."""
    path = resolve_batch_dir(path)
    info = BatchDir.open(path).read_info()
    shard = shards.recorded(info)
    if info is None or shard is None:
        raise UsageError(f"{path} is not a shard's batch (its batch.json records no shard)")
    if info.get("exit_code") is None or not (path / SUMS).is_file():
        raise UsageError(
            f"{path} (shard {shard}) has not finished; finish it first: runner resume {path}"
        )
    _, problems = check(path)
    if problems:
        raise UsageError(
            f"{path} (shard {shard}) does not verify ({problems[0]}); see: runner verify {path}"
        )
    jobs = path / JOBS
    found = (
        frozenset(p.name for p in jobs.iterdir() if p.is_dir()) if jobs.is_dir() else frozenset()
    )
    return ShardBatch(path, shard, info, found)


def _same(batches: Sequence[ShardBatch]) -> None:
    """One manifest, one input set, one selection, one N, each K once, none missing."""
    first = batches[0]
    for other in batches[1:]:
        for key, what in (
            ("manifest_sha256", "manifest"),
            ("inputs", "inputs (each files)"),
        ):
            if other.info.get(key) != first.info.get(key):
                raise UsageError(
                    f"{other.path} and {first.path} ran different {what}: they are not "
                    "shards of one batch"
                )
        mine, theirs = first.info[shards.INFO_KEY], other.info[shards.INFO_KEY]
        if other.shard.count != first.shard.count:
            raise UsageError(
                f"{other.path} is shard {other.shard} but {first.path} is shard "
                f"{first.shard}: not one split"
            )
        if (mine.get("only"), mine.get("tags")) != (theirs.get("only"), theirs.get("tags")):
            raise UsageError(
                f"{other.path} and {first.path} selected different jobs (--only/--tag)"
            )
    seen: dict[int, Path] = {}
    for batch in batches:
        if batch.shard.index in seen:
            raise UsageError(
                f"shard {batch.shard} is given twice: {seen[batch.shard.index]} and {batch.path}"
            )
        seen[batch.shard.index] = batch.path
    missing = [k for k in range(1, first.shard.count + 1) if k not in seen]
    if missing:
        names = ", ".join(f"{k}/{first.shard.count}" for k in missing)
        raise UsageError(f"shard {names} missing: give every shard's batch directory")


def _plan(batch: ShardBatch) -> Plan:
    """The whole selection the shards split, from the first shard's own copies."""
    record = inputs.parse(inputs.render(batch.info.get("inputs") or {}))
    try:
        resolve = inputs.check_copies(batch.path, record)
    except InputError as exc:
        raise UsageError(f"{batch.path}: {exc}") from None
    loaded = parse_manifest(
        (batch.path / "manifest.yaml").read_bytes(),
        source=batch.path / "manifest.yaml",
        env=os.environ,
        sandbox_keys=True,  # keys are not needed to list the jobs
        resolve=resolve,
    )
    entry = batch.info[shards.INFO_KEY]
    return select_jobs(loaded.plan, entry.get("only") or (), entry.get("tags") or ())


def _complete(batches: Sequence[ShardBatch], plan: Plan) -> None:
    """Every job of the selection in exactly one shard, the one that owns it."""
    owner: dict[str, Path] = {}
    for batch in batches:
        for job_id in sorted(batch.jobs):
            if job_id in owner:
                raise UsageError(
                    f"job {job_id!r} is in both {owner[job_id]} and {batch.path}: "
                    "the shards overlap"
                )
            owner[job_id] = batch.path
            if not batch.shard.owns(job_id):
                raise UsageError(
                    f"job {job_id!r} in {batch.path} does not belong to shard {batch.shard}"
                )
    wanted = [spec.id for spec in plan.jobs]
    absent = [job_id for job_id in wanted if job_id not in owner]
    if absent:
        count = (
            "1 job of the manifest has"
            if len(absent) == 1
            else f"{len(absent)} jobs of the manifest have"
        )
        k = shards.owner(absent[0], batches[0].shard.count) + 1
        where = next(b.path for b in batches if b.shard.index == k)
        raise UsageError(
            f"{count} no results, first {absent[0]!r} (shard "
            f"{k}/{batches[0].shard.count}): finish it with: runner resume {where}"
        )
    extra = sorted(set(owner) - set(wanted))
    if extra:
        raise UsageError(f"job {extra[0]!r} in {owner[extra[0]]} is not in the manifest")


def _copy_tree(source: Path, dest: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True, copy_function=shutil.copy2)


def _started(info: Mapping[str, Any], key: str) -> datetime | None:
    text = info.get(key)
    if not isinstance(text, str):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def merge_batches(dirs: Sequence[Path], out: Path, argv: Sequence[str] = ()) -> Merged:
    """Check the shards and write the merged batch directory under `out`."""
    if not dirs:
        raise UsageError("merge: give the batch directory of every shard")
    batches = sorted((_open(d) for d in dirs), key=lambda b: b.shard.index)
    _same(batches)
    plan = _plan(batches[0])
    _complete(batches, plan)
    counts: dict[str, int] = {}
    remote_ids: dict[str, str] = {}
    for batch in batches:
        for state, n in (batch.info.get("counts") or {}).items():
            counts[state] = counts.get(state, 0) + int(n)
        remote_ids.update(batch.info.get("remote_ids") or {})
    starts = [s for b in batches if (s := _started(b.info, "started")) is not None]
    ends = [e for b in batches if (e := _started(b.info, "ended")) is not None]
    started = min(starts, default=datetime.now(UTC))
    succeeded = counts.get(State.SUCCEEDED.value, 0) == sum(counts.values())
    code = ExitCode.OK if succeeded else ExitCode.JOBS_FAILED
    first = batches[0]
    with lock.acquire(out, plan.name) as held:
        merged = BatchDir.create(out, plan, now=started)
        held.note_batch(merged.batch_id)
        try:
            _copy_tree(first.path / INPUTS, merged.path / INPUTS)
            for batch in batches:
                _copy_tree(batch.path / JOBS, merged.path / JOBS)
                _copy_tree(batch.path / ATTEMPTS, merged.path / ATTEMPTS)
            merged.inputs = dict(first.info.get("inputs") or {})
            merged.extra_info = {
                "merged_from": [
                    {"shard": str(b.shard), "batch": str(b.path), "batch_id": b.path.name}
                    for b in batches
                ],
                shards.INFO_KEY: None,
            }
            merged.finish(
                counts=counts,
                exit_code=int(code),
                started=started,
                ended=max(ends, default=datetime.now(UTC)),
                argv=list(argv),
                secrets=(),
                remote_ids=remote_ids,
                endpoints=Endpoints.from_info(first.info),
            )
        except BaseException:
            shutil.rmtree(merged.path, ignore_errors=True)
            raise
    return Merged(merged.path, len(plan.jobs), counts, int(code))
