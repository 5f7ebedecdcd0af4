"""`runner diff A B [--json] [--exit-code]`: what changed between two batches of a manifest.

Jobs added and removed, jobs whose request changed (fingerprint; the params paths and other
fields that differ, read from each batch's own manifest copy and `each` inputs), and jobs
whose results changed (state, or files by sha256: SHA256SUMS where the batch was sealed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.batch import inputs
from runner.commands.resume import DIR_HELP
from runner.errors import RunnerError
from runner.fingerprint import fingerprint_document, job_fingerprint
from runner.manifest.loader import parse_manifest
from runner.store.gitinfo import describe
from runner.store.jsonio import canonical_json
from runner.store.locate import resolve_batch_dir
from runner.store.results import (
    BATCH,
    JOBS,
    MANIFEST,
    OUTCOME,
    BatchDir,
    file_sha256,
    files_on_disk,
    read_sums,
)

HELP = "compare two batches: jobs added, removed, changed in what they asked, results changed"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", type=Path, help="the earlier batch; " + DIR_HELP)
    parser.add_argument("b", metavar="B", type=Path, help="the later batch; " + DIR_HELP)
    parser.add_argument("--json", action="store_true", help="canonical JSON on stdout")
    parser.add_argument(
        "--exit-code",
        action="store_true",
        help="exit 1 when the batches differ, 0 when they do not (as git diff --exit-code)",
    )


@dataclass(frozen=True, slots=True)
class Job:
    """One job of a batch as the diff sees it."""

    id: str
    provider: str | None
    type: str | None
    fingerprint: str | None
    asked: Mapping[str, Any] | None  # fingerprint_document, when the manifest copy parsed
    state: str | None  # job.json's, None while unfinished
    files: Mapping[str, str]  # path under jobs/<id>/ (job.json aside) -> sha256


@dataclass(frozen=True, slots=True)
class Side:
    path: Path
    info: Mapping[str, Any]
    jobs: Mapping[str, Job]
    note: str | None  # why what the jobs asked could not be read from the manifest copy

    def header(self) -> dict[str, Any]:
        return {
            "batch": self.path.name,
            "name": self.info.get("name", self.path.parent.name),
            "path": str(self.path),
            "started": self.info.get("started"),
            "exit_code": self.info.get("exit_code"),
            "git": self.info.get("git"),
            "note": self.note,
        }


def _json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _asked(batch: Path, info: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """job id -> (provider, type, fingerprint document) from the batch's own manifest copy."""
    record = info.get("inputs") if isinstance(info.get("inputs"), dict) else {}
    try:
        loaded = parse_manifest(
            (batch / MANIFEST).read_bytes(),
            source=batch / MANIFEST,
            env={},
            sandbox_keys=True,
            resolve=inputs.resolver(batch, record or {}),
        )
    except (RunnerError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return {}, f"its {MANIFEST} could not be read ({first}); compared by fingerprint only"
    return {spec.id: spec for spec in loaded.plan.jobs}, None


def read_side(path: Path) -> Side:
    path = resolve_batch_dir(path)
    BatchDir.open(path)
    info = _json(path / BATCH)
    specs, note = _asked(path, info)
    sums = read_sums(path)
    jobs: dict[str, Job] = {}
    root = path / JOBS
    ids = {p.name for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()
    for job_id in sorted(ids | set(specs)):
        outcome = _json(root / job_id / OUTCOME)
        spec = specs.get(job_id)
        files: dict[str, str] = {}
        for rel in files_on_disk(root / job_id):
            if rel == OUTCOME:
                continue
            key = f"{JOBS}/{job_id}/{rel}"
            files[rel] = sums[key] if sums and key in sums else file_sha256(root / job_id / rel)
        fingerprint = job_fingerprint(spec) if spec is not None else outcome.get("fingerprint")
        jobs[job_id] = Job(
            id=job_id,
            provider=spec.provider if spec is not None else outcome.get("provider"),
            type=spec.type if spec is not None else outcome.get("type"),
            fingerprint=fingerprint if isinstance(fingerprint, str) else None,
            asked=fingerprint_document(spec) if spec is not None else None,
            state=outcome.get("state") if isinstance(outcome.get("state"), str) else None,
            files=files,
        )
    return Side(path, info, jobs, note)


def changed_paths(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The paths (`params.urls[0].url`) where `a` and `b` differ, in order."""
    if isinstance(a, dict) and isinstance(b, dict):
        found: list[str] = []
        for key in sorted(set(a) | set(b), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                found.append(where)
            else:
                found += changed_paths(a[key], b[key], where)
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            p
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for p in changed_paths(x, y, f"{prefix}[{i}]")
        ]
    return [] if a == b else [prefix or "(all)"]


def compare(a: Side, b: Side) -> dict[str, Any]:
    """The diff as data (what `--json` prints)."""
    added = [_brief(b.jobs[i]) for i in sorted(set(b.jobs) - set(a.jobs))]
    removed = [_brief(a.jobs[i]) for i in sorted(set(a.jobs) - set(b.jobs))]
    changed: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    both = sorted(set(a.jobs) & set(b.jobs))
    for job_id in both:
        old, new = a.jobs[job_id], b.jobs[job_id]
        if old.asked is not None and new.asked is not None:
            fields = changed_paths(old.asked, new.asked)
        elif old.fingerprint and new.fingerprint and old.fingerprint != new.fingerprint:
            fields = ["fingerprint"]
        else:  # an older runner's batch with an unreadable manifest: nothing to compare
            fields = []
        if fields:
            changed.append(
                {"id": job_id, "fields": fields, "a": old.fingerprint, "b": new.fingerprint}
            )
        entry: dict[str, Any] = {"id": job_id}
        if old.state != new.state:
            entry["state"] = {"a": old.state, "b": new.state}
        files = {
            "added": sorted(set(new.files) - set(old.files)),
            "removed": sorted(set(old.files) - set(new.files)),
            "changed": sorted(
                f for f in set(old.files) & set(new.files) if old.files[f] != new.files[f]
            ),
        }
        if any(files.values()):
            entry["files"] = files
        if len(entry) > 1:
            results.append(entry)
    asked_same = len(both) - len(changed)
    return {
        "a": a.header(),
        "b": b.header(),
        "added": added,
        "removed": removed,
        "changed": changed,
        "results": results,
        "unchanged": asked_same,
        "same": not (added or removed or changed or results),
    }


def _brief(job: Job) -> dict[str, Any]:
    return {"id": job.id, "provider": job.provider, "type": job.type, "state": job.state}


def render(document: Mapping[str, Any]) -> str:
    a, b = document["a"], document["b"]
    lines = [
        f"A {a['batch']}  {describe(a['git'])}  ({a['path']})",
        f"B {b['batch']}  {describe(b['git'])}  ({b['path']})",
    ]
    if a["name"] != b["name"]:
        lines.append(f"note: batches of different manifests ({a['name']!r}, {b['name']!r})")
    lines += [f"note: A: {a['note']}"] if a["note"] else []
    lines += [f"note: B: {b['note']}"] if b["note"] else []
    added, removed, changed = document["added"], document["removed"], document["changed"]
    lines.append(
        f"jobs: {len(added)} added, {len(removed)} removed, {len(changed)} changed in what "
        f"they asked, {document['unchanged']} unchanged"
    )
    width = max([len(j["id"]) for j in [*added, *removed, *changed]] + [0])
    lines += [f"  + {j['id'].ljust(width)}  {j['provider']} {j['type']}" for j in added]
    lines += [f"  - {j['id'].ljust(width)}  {j['provider']} {j['type']}" for j in removed]
    lines += [f"  ~ {j['id'].ljust(width)}  {', '.join(j['fields'])}" for j in changed]
    results = document["results"]
    lines.append(f"results: {len(results)} changed")
    width = max([len(r["id"]) for r in results] + [0])
    for entry in results:
        parts = []
        if "state" in entry:
            parts.append(
                f"state {entry['state']['a'] or 'none'} -> {entry['state']['b'] or 'none'}"
            )
        for kind in ("changed", "added", "removed"):
            names = entry.get("files", {}).get(kind, [])
            if names:
                parts.append(f"{kind}: {', '.join(names)}")
        lines.append(f"  ~ {entry['id'].ljust(width)}  {'; '.join(parts)}")
    return "\n".join(lines) + "\n"


def execute(args: argparse.Namespace) -> int:
    document = compare(read_side(args.a), read_side(args.b))
    if args.json:
        sys.stdout.buffer.write(canonical_json(document))
    else:
        sys.stdout.write(render(document))
    return 1 if args.exit_code and not document["same"] else 0
