"""Expectations (`expect:`): does a job that finished remotely hold what it should? At least
N result items or files, every item valid against a JSON Schema, at most a share of failed
items. A job that misses one ends `failed` with the reason; its files stay for inspection.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from runner.engine.engine import Judge
from runner.lifecycle import JobRecord
from runner.plan import Expect
from runner.remote import FetchReport
from runner.store.results import BatchDir, files_on_disk

# What each provider reports as failed items (FetchReport.outcome, so job.json): Bulkgrid
# failed_results, Spidra batch failed_items and crawl failed_pages (README "Providers").
FAILED_FIELDS = ("failed_results", "failed_items", "failed_pages")
ITEMS = "results.jsonl"
RESULT = "result.json"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def failed_count(outcome: Mapping[str, Any]) -> int | None:
    """Items the provider reported failed, or None when it reports no such count."""
    counts = [
        value
        for key in FAILED_FIELDS
        if isinstance(value := outcome.get(key), int) and not isinstance(value, bool)
    ]
    return sum(counts) if counts else None


def _items(directory: Path) -> Iterator[tuple[str, int, Any]]:
    """(file, number, item) of every result item: results.jsonl lines, else result.json."""
    lines = directory / ITEMS
    if lines.is_file():
        with lines.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield ITEMS, number, json.loads(line)
        return
    single = directory / RESULT
    if single.is_file():
        yield RESULT, 1, json.loads(single.read_bytes())


@cache
def _validators(schema_text: str) -> tuple[Any, Draft202012Validator]:
    schema = json.loads(schema_text)
    return jsonschema_rs.validator_for(schema), Draft202012Validator(schema)


def _where(path: Any) -> str:
    parts = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return parts.lstrip(".") or "(root)"


def check_schema(expect: Expect, directory: Path) -> str | None:
    """Every result item against `expect.schema`: None, or the first invalid one and a count."""
    if expect.schema is None:
        return None
    fast, slow = _validators(json.dumps(expect.schema, sort_keys=True))
    first: str | None = None
    invalid = total = 0
    for name, number, item in _items(directory):
        total += 1
        if fast.is_valid(item):
            continue
        invalid += 1
        if first is None:
            error = best_match(slow.iter_errors(item))
            detail = f"{error.message} at {_where(error.absolute_path)}" if error else "invalid"
            first = f"{name} item {number}: {detail}"
    if first is None:
        return None
    source = "inline schema" if expect.schema_source in (None, "inline") else expect.schema_source
    return (
        f"{invalid} of {_plural(total, 'result item')} do not match expect.schema "
        f"({source}); first: {first}"
    )


def check(expect: Expect, report: FetchReport, directory: Path) -> str | None:
    """Why the finished job does not meet `expect`, or None."""
    items = report.items
    if expect.min_items is not None and items < expect.min_items:
        return f"completed with {_plural(items, 'result')}; expected at least {expect.min_items}"
    files = len(files_on_disk(directory / "files"))
    if expect.min_files is not None and files < expect.min_files:
        return f"completed with {_plural(files, 'file')}; expected at least {expect.min_files}"
    failed = failed_count(report.outcome)
    if failed:
        total = max(items, failed)
        share = failed / total
        if share > expect.max_failed_share:
            allowed = f"{expect.max_failed_share:.0%}"
            return (
                f"completed with {failed} of {_plural(total, 'item')} failed ({share:.0%}); "
                f"expected at most {allowed} failed (expect.max_failed_share)"
            )
    return check_schema(expect, directory)


def judge_for(batch: BatchDir) -> Judge:
    """The engine's Judge for `batch`: commits the job's item stream (so results.jsonl is
    kept and read whole whatever the verdict), then checks the job's `expect`."""

    def judge(job: JobRecord, report: FetchReport) -> str | None:
        expect = job.spec.expect
        if expect is None:
            return None
        out = batch.job_dir(job.spec.id)
        out.commit()
        try:
            return check(expect, report, out.path)
        except ValueError as exc:  # a result line that is not JSON: say so, keep the files
            return f"the results could not be read to check expect: {exc}"

    return judge
