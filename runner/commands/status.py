"""`runner status DIR [--json]`: a batch's jobs per state, read from its journal.

Reads the journal read-only, so it works while a run is writing it (WAL).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from runner.commands.resume import DIR_HELP
from runner.errors import JournalError, UsageError
from runner.exits import ExitCode
from runner.store.journal import JobRow, Journal
from runner.store.jsonio import canonical_json
from runner.store.locate import resolve_batch_dir
from runner.store.lock import Holder, probe
from runner.store.results import BatchDir, no_journal

HELP = "show a batch's jobs per state (works while it runs)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", type=Path, help=DIR_HELP)
    parser.add_argument("--json", action="store_true", help="canonical JSON on stdout")


def _run_state(batch_id: str, name: str, holder: Holder | None) -> str:
    if holder is None:
        return "not running"
    if holder.batch_id in (batch_id, None):
        return f"running ({holder.describe()})"
    return f"not running (run {holder.batch_id} of {name!r} holds the lock: {holder.describe()})"


def _job(row: JobRow, attempt: int) -> dict[str, Any]:
    return {
        "id": row.job_id,
        "provider": row.provider,
        "type": row.type,
        "state": row.state.value,
        "provider_status": row.raw_status,
        "reason": row.reason,
        "error": row.error,
        "remote_id": row.remote.id if row.remote else None,
        "attempts": row.attempts,  # submits sent in this attempt
        "attempt": attempt,  # 1, or the attempt `runner retry` made (attempts/<id>/ keeps the rest)
        "polls": row.polls,
        "reused_from": row.notes.get("reused_from"),  # the batch it was reused from, or None
    }


def status_document(path: Path) -> dict[str, Any]:
    """What `runner status` reports, as data."""
    path = resolve_batch_dir(path)
    batch = BatchDir.open(path)
    real = path.resolve()
    name, batch_id = real.parent.name, real.name
    try:
        journal = Journal.open(batch.journal_path, readonly=True)
    except JournalError as exc:
        raise UsageError(no_journal(path, exc)) from exc
    try:
        meta = journal.meta()
        counts = journal.counts()
        rows = journal.rows()
        attempts = journal.attempts()
    finally:
        journal.close()
    holder = probe(real.parent.parent, name)
    running = holder is not None and holder.batch_id in (batch_id, None)
    return {
        "batch_id": meta.get("batch_id", batch_id),
        "name": meta.get("name", name),
        "path": str(path),
        "running": running,
        "run": _run_state(batch_id, name, holder),
        "lock": None
        if holder is None
        else {"pid": holder.pid, "started": holder.started, "batch_id": holder.batch_id},
        "total": len(rows),
        "counts": counts,
        "reused": sum(bool(row.notes.get("reused_from")) for row in rows),
        "jobs": [_job(row, attempts.get(row.job_id, 1)) for row in rows],
    }


def render(document: dict[str, Any]) -> str:
    """The human form: a header, the counts, a table, then each job's error."""
    lines = [
        f"{document['path']}: batch {document['batch_id']} of {document['name']!r}, "
        f"{document['run']}"
    ]
    counts = ", ".join(
        f"{n} {state}"
        + (
            f" ({document['reused']} reused)"
            if state == "succeeded" and document.get("reused")
            else ""
        )
        for state, n in document["counts"].items()
    )
    total = document["total"]
    lines.append(f"{total} job{'' if total == 1 else 's'}: {counts or 'none'}")
    header = ("ID", "PROVIDER", "STATE", "STATUS", "REASON")
    table = [header] + [
        (
            job["id"],
            job["provider"],
            job["state"]
            + (f" (attempt {job['attempt']})" if job["attempt"] > 1 else "")
            + (f" (reused from {job['reused_from']})" if job.get("reused_from") else ""),
            job["provider_status"] or "-",
            job["reason"] or "-",
        )
        for job in document["jobs"]
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines.append("")
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    errors = [f"{job['id']}: {job['error']}" for job in document["jobs"] if job["error"]]
    if errors:
        lines.append("")
        lines.extend(errors)
    return "\n".join(lines) + "\n"


def execute(args: argparse.Namespace) -> int:
    document = status_document(args.dir)
    if args.json:
        sys.stdout.buffer.write(canonical_json(document))
        sys.stdout.flush()
    else:
        sys.stdout.write(render(document))
    return ExitCode.OK
