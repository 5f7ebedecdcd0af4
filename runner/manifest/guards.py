"""`expect:` and `budget:` from a manifest: checked at validate time (an expectation's JSON
Schema must exist and be a valid schema), resolved into the Plan's Expect and Budget values.

An expectation's schema file is read like an `each` file (relative to the manifest, or
through a batch's copies on resume) and recorded as one of the batch's inputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from runner.manifest import each as each_mod
from runner.manifest.report import PathT
from runner.manifest.settings import Reporter
from runner.plan import Budget, Expect
from runner.providers.registry import PROVIDERS

MAX_SCHEMA_BYTES = 1024 * 1024


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _share(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    return None


def read_budget(conf: Any) -> Budget:
    """`budget:` (batch or provider) as a value; malformed fields were reported by the schema."""
    if not isinstance(conf, dict):
        return Budget()
    credits = conf.get("credits")
    if isinstance(credits, bool) or not isinstance(credits, int | float) or credits < 0:
        return Budget(jobs=_count(conf.get("jobs")))
    return Budget(jobs=_count(conf.get("jobs")), credits=float(credits))


def check_provider_budget(report: Reporter, name: str, conf: Any) -> Budget:
    """A provider's budget; `credits` on a provider that reports no cost cannot be kept."""
    budget = read_budget(conf)
    info = PROVIDERS.get(name)
    if budget.credits is not None and info is not None and info.cost_field is None:
        report.add(
            ("providers", name, "budget", "credits"),
            f"{info.title} reports no cost per job, so a credit cap cannot be kept; "
            "cap its jobs instead (budget.jobs)",
        )
    return budget


class ExpectReader:
    """Resolves `expect:` of every job (job keys over `defaults.expect` keys), reading each
    schema file once; problems go to the report, located."""

    def __init__(
        self,
        report: Reporter,
        resolve: each_mod.Resolver,
        opener: each_mod.Opener,
        record: Callable[[each_mod.EachFile], object],
    ) -> None:
        self.report = report
        self.resolve = resolve
        self.opener = opener
        self.record = record
        self._files: dict[str, Mapping[str, Any] | None] = {}
        self._checked: set[int] = set()  # ids of inline schemas already checked

    def expect(self, base: PathT, own: Any, defaults: Any) -> Expect | None:
        """The job's Expect (None when neither the job nor the defaults say `expect`)."""
        if not isinstance(own, dict) and not isinstance(defaults, dict):
            return None
        layers: list[tuple[PathT, dict[str, Any]]] = []
        if isinstance(own, dict):
            layers.append(((*base, "expect"), own))
        if isinstance(defaults, dict):
            layers.append((("defaults", "expect"), defaults))

        def pick(key: str) -> tuple[PathT, Any]:
            for path, layer in layers:
                if key in layer:
                    return (*path, key), layer[key]
            return (), None

        _, min_items = pick("min_items")
        _, min_files = pick("min_files")
        _, share = pick("max_failed_share")
        where, raw_schema = pick("schema")
        schema, source = self.schema(where, raw_schema) if where else (None, None)
        return Expect(
            min_items=_count(min_items),
            min_files=_count(min_files),
            schema=schema,
            schema_source=source,
            max_failed_share=_share(share) or 0.0,
        )

    def schema(self, path: PathT, raw: Any) -> tuple[Mapping[str, Any] | None, str | None]:
        if isinstance(raw, dict):
            if id(raw) not in self._checked:  # defaults.expect: checked once, where it is
                self._checked.add(id(raw))
                self._check(path, raw, "the inline schema")
            return raw, "inline"
        if not isinstance(raw, str) or not raw:
            return None, None  # the schema reported it
        if raw not in self._files:
            self._files[raw] = self._read(path, raw)
        found = self._files[raw]
        return (found, raw) if found is not None else (None, None)

    def _read(self, path: PathT, name: str) -> Mapping[str, Any] | None:
        target = self.resolve(name)
        try:
            with self.opener(target) as handle:
                data = handle.read(MAX_SCHEMA_BYTES + 1)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self.report.add(path, f"{name!r}: cannot read the schema file: {reason}")
            return None
        if len(data) > MAX_SCHEMA_BYTES:
            self.report.add(path, f"{name!r}: larger than {MAX_SCHEMA_BYTES:,} bytes")
            return None
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            self.report.add(path, f"{name!r} is not JSON: {exc}")
            return None
        if not isinstance(document, dict):
            self.report.add(path, f"{name!r} is not a JSON Schema (an object)")
            return None
        if not self._check(path, document, repr(name)):
            return None
        self.record(each_mod.EachFile(name, target, hashlib.sha256(data).hexdigest()))
        return document

    def _check(self, path: PathT, schema: dict[str, Any], what: str) -> bool:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path)
            where = where.lstrip(".")
            self.report.add(
                path, f"{what} is not a valid JSON Schema: {exc.message} at {where or '(root)'}"
            )
            return False
        return True
