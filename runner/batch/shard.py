"""Sharding: which jobs of a plan one `runner run --shard K/N` owns, and where K/N comes from.

A job belongs to shard `sha256(job id) mod N` (0-based inside, K = that + 1 on the command
line): stable across processes, machines, Python versions and reorderings of the manifest
(never Python's salted `hash()`). K/N comes from `--shard K/N` (1-based, as Playwright and
GitLab count), `RUNNER_SHARD=K/N`, or Kubernetes' `JOB_COMPLETION_INDEX` (0-based) with
`--shards N`. Anything set but malformed is a usage error: a shard never runs everything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runner.errors import UsageError
from runner.plan import Plan
from runner.store.results import format_batch_id

ENV_SHARD = "RUNNER_SHARD"
ENV_INDEX = "JOB_COMPLETION_INDEX"  # Kubernetes Indexed Job: 0 .. completions-1
MAX_SHARDS = 10_000
_K_OF_N = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
INFO_KEY = "shard"  # batch.json: {"index": K, "count": N, "only": [...], "tags": [...]}


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def suffix(self) -> str:
        """What names this shard's batch directory and lock: `s2of4`."""
        return f"s{self.index}of{self.count}"

    def owns(self, job_id: str) -> bool:
        return owner(job_id, self.count) == self.index - 1


def owner(job_id: str, count: int) -> int:
    """The 0-based shard of `job_id` among `count`: sha256 of its UTF-8 id, mod count."""
    digest = hashlib.sha256(job_id.encode("utf-8")).digest()
    return int.from_bytes(digest, "big") % count


def parse(text: str, where: str) -> Shard:
    """`K/N` with 1 <= K <= N <= MAX_SHARDS; `where` names the flag or variable."""
    match = _K_OF_N.match(text)
    if match is None:
        shown = repr(text) if text.strip() else "empty"
        raise UsageError(f"{where}: {shown} is not K/N (e.g. 2/4: shard 2 of 4, counted from 1)")
    index, count = int(match.group(1)), int(match.group(2))
    return _checked(index, count, where, text)


def _checked(index: int, count: int, where: str, text: str) -> Shard:
    if not 1 <= count <= MAX_SHARDS:
        raise UsageError(f"{where}: {text}: the number of shards must be 1 to {MAX_SHARDS}")
    if not 1 <= index <= count:
        raise UsageError(f"{where}: {text}: the shard must be 1 to {count} (counted from 1)")
    return Shard(index, count)


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise UsageError(f"--shards: {text!r} is not a number of shards")
    return int(text)


def from_options(shard: str | None, shards: str | None, env: Mapping[str, str]) -> Shard | None:
    """The shard this process runs, or None for an unsharded run (nothing given at all).

    `--shard K/N` first; `--shards N` takes K from JOB_COMPLETION_INDEX (0-based, so K =
    index + 1) and requires it; else RUNNER_SHARD. A variable that is set must be well
    formed, empty included; two sources that disagree are an error."""
    found: list[tuple[str, Shard]] = []
    if shard is not None:
        found.append(("--shard", parse(shard, "--shard")))
    if shards is not None:
        count = _count(shards)
        raw = env.get(ENV_INDEX)
        if raw is None:
            raise UsageError(
                f"--shards {shards}: {ENV_INDEX} is not set (Kubernetes sets it in an "
                f"Indexed Job); elsewhere give --shard K/N or {ENV_SHARD}=K/N"
            )
        if not raw.strip().isdigit():
            shown = repr(raw) if raw.strip() else "empty"
            raise UsageError(f"{ENV_INDEX}: {shown} is not a job index (0, 1, 2, ...)")
        where = f"{ENV_INDEX}={raw.strip()} with --shards {shards}"
        found.append((where, _checked(int(raw) + 1, count, where, f"index {raw.strip()}")))
    if ENV_SHARD in env:
        found.append((ENV_SHARD, parse(env[ENV_SHARD], ENV_SHARD)))
    if not found:
        return None
    first_where, first = found[0]
    for where, other in found[1:]:
        if other != first:
            raise UsageError(
                f"{first_where} says shard {first} but {where} says {other}; give one of them"
            )
    return first


def select(plan: Plan, shard: Shard | None) -> Plan:
    """The plan's jobs that `shard` owns (all of them for None), in plan order."""
    if shard is None:
        return plan
    return dataclasses.replace(plan, jobs=tuple(j for j in plan.jobs if shard.owns(j.id)))


def info(shard: Shard, only: Sequence[str], tags: Sequence[str]) -> dict[str, Any]:
    """What batch.json records of a shard: enough for resume to refuse another shard and for
    `runner merge` to know the selection the shards split."""
    return {"index": shard.index, "count": shard.count, "only": list(only), "tags": list(tags)}


def recorded(document: Mapping[str, Any] | None) -> Shard | None:
    """The shard a batch.json recorded (None: an unsharded batch)."""
    entry = (document or {}).get(INFO_KEY)
    if not isinstance(entry, dict):
        return None
    index, count = entry.get("index"), entry.get("count")
    if not isinstance(index, int) or not isinstance(count, int):
        return None
    return Shard(index, count)


def check_resumed_as(path: object, recorded_shard: Shard | None, asked: Shard | None) -> None:
    """A shard batch continues only as itself: `runner resume` with another K/N (from the
    flag or the environment) is refused; with none it goes on as recorded."""
    if asked is None or asked == recorded_shard:
        return
    if recorded_shard is None:
        raise UsageError(
            f"{path} is an unsharded batch; it cannot be resumed as shard {asked} "
            f"(unset {ENV_SHARD}, or drop --shard)"
        )
    raise UsageError(
        f"{path} is shard {recorded_shard}; it cannot be resumed as shard {asked} "
        f"(resume each shard's own directory, with {ENV_SHARD} unset or {recorded_shard})"
    )


def lock_name(name: str, shard: Shard | None) -> str:
    """The overlap lock of a run: per manifest, and per shard (shards of one manifest may
    share a results root on one host)."""
    return name if shard is None else f"{name}.{shard.suffix}"


def batch_id(started: datetime, shard: Shard | None) -> str | None:
    """A shard's batch directory name: the start time and the shard (`...Z-s2of4`), so the
    shards of one manifest never take each other's names; None: the usual id."""
    return None if shard is None else f"{format_batch_id(started)}-{shard.suffix}"


def record(shard: Shard | None, only: Sequence[str], tags: Sequence[str]) -> dict[str, Any]:
    """The batch.json fields of a run: `shard` for a shard, nothing for an unsharded run."""
    return {} if shard is None else {INFO_KEY: info(shard, only, tags)}


def carry(document: Mapping[str, Any] | None) -> dict[str, Any]:
    """The shard fields batch.json recorded, kept when a continuation rewrites it."""
    entry = (document or {}).get(INFO_KEY)
    return {INFO_KEY: entry} if isinstance(entry, dict) else {}
