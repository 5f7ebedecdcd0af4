"""`runner prune results/<name> --keep N [--dry-run]`: remove old batches of a manifest.

Only directories named as batches (`20261122T030000Z`, `-2`..., a shard's `-s2of4`) with a
manifest.yaml are considered. Kept: the newest N batches, the one `latest` points at, and every
batch a kept batch reuses files from (job.json `reused_from`), so provenance always resolves.
Prune takes the manifest's lock, so it never runs beside a run of the same manifest: no running
batch, and no batch a starting run is about to reuse, is ever removed (a held lock is exit 4).
A shard's batch is a batch like any other, but a shard still running (its own lock held) and
a shard of the newest run not yet merged (newer than every other batch, and named by no
batch's `merged_from`) always stay: `runner merge` still needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.batch import shard as shards
from runner.batch.reuse import REUSED_FROM
from runner.errors import UsageError, store_error
from runner.store import lock
from runner.store.locate import batches_in, is_batch_name
from runner.store.results import BATCH, JOBS, LATEST, MANIFEST, OUTCOME

HELP = "remove old batches of a manifest, keeping the newest N and every batch they reuse"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dir", metavar="DIR", type=Path, help="a manifest's results directory: results/<name>"
    )
    parser.add_argument(
        "--keep",
        type=int,
        required=True,
        metavar="N",
        help="keep the newest N batches (at least 1), plus latest and what they reuse",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="say what would be removed; remove nothing"
    )


@dataclass(slots=True)
class Verdict:
    """One batch: kept (with every reason) or removed."""

    path: Path
    reasons: list[str] = field(default_factory=list)

    @property
    def kept(self) -> bool:
        return bool(self.reasons)


def sources_of(batch: Path) -> dict[str, int]:
    """The batches `batch` reuses files from → how many of its jobs come from each (its
    jobs' job.json, and batch.json's `reused_from` for a job.json that cannot be read)."""
    found: dict[str, int] = {}
    jobs = batch / JOBS
    for job in sorted(jobs.iterdir()) if jobs.is_dir() else []:
        try:
            document = json.loads((job / OUTCOME).read_bytes())
        except (OSError, ValueError):
            continue
        source = document.get(REUSED_FROM) if isinstance(document, dict) else None
        if isinstance(source, dict) and isinstance(source.get("batch"), str):
            found[source["batch"]] = found.get(source["batch"], 0) + 1
    try:
        info = json.loads((batch / BATCH).read_bytes())
    except (OSError, ValueError):
        info = None
    listed = info.get(REUSED_FROM) if isinstance(info, dict) else None
    for name in (listed or {}).values() if isinstance(listed, dict) else ():
        if isinstance(name, str) and name not in found:
            found[name] = 1
    return found


def _info(batch: Path) -> dict[str, Any]:
    try:
        document = json.loads((batch / BATCH).read_bytes())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def shards_to_keep(directory: Path, batches: Sequence[Path]) -> dict[str, str]:
    """Shard batches (newest first in `batches`) that must stay, with why: one still
    running (its shard's lock is held), and the unmerged shards of the newest run (every
    shard batch newer than the newest batch that is not a shard, named by no `merged_from`)."""
    infos = {path.name: _info(path) for path in batches}
    merged: set[str] = set()
    for info in infos.values():
        entries = info.get("merged_from")
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("batch_id"), str):
                merged.add(entry["batch_id"])
    keep: dict[str, str] = {}
    newest_run = True
    for path in batches:
        shard = shards.recorded(infos[path.name])
        if shard is None:
            newest_run = False  # older shards belong to runs a later batch followed
            continue
        holder = lock.probe(directory.parent, shards.lock_name(directory.name, shard))
        if holder is not None and holder.batch_id == path.name:
            keep[path.name] = f"shard {shard} running"
        elif newest_run and path.name not in merged:
            keep[path.name] = f"shard {shard} of the newest run, not merged yet"
    return keep


def decide(
    batches: Sequence[Path],
    keep: int,
    latest: str | None,
    sources: Mapping[str, Mapping[str, int]],
    pinned: Mapping[str, str] | None = None,
) -> list[Verdict]:
    """Pure: which of `batches` (newest first) stay and why. `sources[b]` names the
    batches `b` reuses from; a kept batch keeps its sources, and theirs in turn. `pinned`:
    batches that stay whatever N is, with why (shards_to_keep)."""
    verdicts = {path.name: Verdict(path) for path in batches}
    for path in batches[:keep]:
        verdicts[path.name].reasons.append(f"among the newest {keep} (--keep {keep})")
    if latest in verdicts:
        verdicts[latest].reasons.append(LATEST)
    for name, why in (pinned or {}).items():
        if name in verdicts:
            verdicts[name].reasons.append(why)
    todo = [name for name, verdict in verdicts.items() if verdict.kept]
    while todo:
        user = todo.pop(0)
        for source, jobs in sorted(sources.get(user, {}).items()):
            verdict = verdicts.get(source)
            if verdict is None or source == user:
                continue
            first = not verdict.kept
            verdict.reasons.append(f"reused by {user} ({jobs} job{'' if jobs == 1 else 's'})")
            if first:
                todo.append(source)
    return [verdicts[path.name] for path in batches]


def _latest(directory: Path) -> str | None:
    link = directory / LATEST
    try:
        return os.readlink(link).rstrip("/").split("/")[-1]
    except OSError:
        return None


def _batches(directory: Path) -> list[Path]:
    """Only directories named as runner names batches: nothing else is ever removed."""
    return [path for path in batches_in(directory) if is_batch_name(path.name)]


def execute(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    if args.keep < 1:
        raise UsageError(f"--keep {args.keep}: keep at least 1 batch")
    if (directory / MANIFEST).is_file():
        raise UsageError(
            f"{directory} is a batch; give the manifest's results directory, "
            f"e.g. runner prune {directory.parent} --keep {args.keep}"
        )
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such directory; give results/<name>")
    if not _batches(directory):  # before the lock: no lock file beside a wrong directory
        raise UsageError(f"{directory} holds no batches; give results/<name>")
    with lock.acquire(directory.parent, directory.name):
        batches = _batches(directory)
        if not batches:  # removed by someone else in between
            raise UsageError(f"{directory} holds no batches; give results/<name>")
        sources = {path.name: sources_of(path) for path in batches}
        pinned = shards_to_keep(directory, batches)
        verdicts = decide(batches, args.keep, _latest(directory), sources, pinned)
        removed = [v for v in verdicts if not v.kept]
        verb = "would remove" if args.dry_run else "removing"
        print(
            f"runner: prune {directory}: {len(batches)} batches; keeping "
            f"{len(batches) - len(removed)}, {verb} {len(removed)}"
            + (" (dry run: nothing removed)" if args.dry_run else "")
        )
        width = max(len(v.path.name) for v in verdicts)
        for verdict in verdicts:
            if verdict.kept:
                print(f"  keep    {verdict.path.name.ljust(width)}  {', '.join(verdict.reasons)}")
            else:
                print(f"  {'would remove' if args.dry_run else 'remove'}  {verdict.path.name}")
        if args.dry_run:
            return 0
        for verdict in removed:
            try:
                shutil.rmtree(verdict.path)
            except OSError as exc:
                raise store_error(verdict.path, exc) from exc
    return 0
