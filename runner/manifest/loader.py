"""Manifest → Plan: read the YAML, check all of it at once (every problem located), expand
`each:`, check ids and params, and build the frozen Plan the engine runs (provider settings
and `${ENV}` are resolved in `settings`, problems located in `report`).

`parse_manifest` decides (it reads nothing but `each` files, through an injected opener, found
relative to the manifest or through a resolver); `load_manifest` reads the file with a size
cap and calls it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import EachError, ManifestError, Problem, YamlError
from runner.manifest import each as each_mod
from runner.manifest.guards import ExpectReader, check_provider_budget, read_budget
from runner.manifest.report import PathT, Report, Where
from runner.manifest.schemas import (
    Checker,
    did_you_mean,
    fetch_defaults,
    job_type_checker,
    manifest_checker,
    show,
)
from runner.manifest.settings import (
    ENV_REF,
    SettingsReader,
    check_poll,
    check_positive,
    duration,
    resolve_poll,
    resolve_timeout,
)
from runner.manifest.yamlsafe import load_yaml
from runner.plan import JobSpec, Plan, PollPolicy, ProviderSettings
from runner.providers.registry import PROVIDERS

MAX_MANIFEST_BYTES = 5 * 1024 * 1024
MAX_JOBS = 1_000_000
MAX_DESCRIBED_ITEMS = 20  # failing `each` items explained in full, per job
# What one job's `each` may make, so a small manifest cannot expand into gigabytes: at most
# this many placeholders in its id and params, and this many characters filled in in total.
MAX_PLACEHOLDERS = 1_000
MAX_EXPANDED_CHARS = 256 * 1024 * 1024

SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_ID_SHAPE = re.compile(r"^[a-z0-9{][A-Za-z0-9._{}-]*$")  # the schema's id pattern
_ID_RULE = "lower-case letters, digits, '.', '_', '-'"


@dataclass(frozen=True, slots=True)
class LoadedManifest:
    plan: Plan
    notices: tuple[str, ...] = ()
    inputs: tuple[each_mod.EachFile, ...] = ()  # every `each` file read, first use first


def load_manifest(
    path: Path, *, env: Mapping[str, str] | None = None, sandbox_keys: bool = False
) -> LoadedManifest:
    """Read `path` (at most MAX_MANIFEST_BYTES) and parse it; ManifestError on any problem."""
    display = str(path)
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            data = b"" if size > MAX_MANIFEST_BYTES else handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        problem = Problem(display, 1, 1, "", f"cannot read the manifest: {reason}")
        raise ManifestError([problem]) from None
    size = max(size, len(data))
    if size > MAX_MANIFEST_BYTES:
        message = (
            f"the file is {size:,} bytes; a manifest may be at most {MAX_MANIFEST_BYTES:,} "
            "bytes (put long job lists in an `each` file)"
        )
        raise ManifestError([Problem(display, 1, 1, "", message)])
    return parse_manifest(data, source=path, env=env, sandbox_keys=sandbox_keys)


def parse_manifest(
    data: bytes,
    *,
    source: Path,
    env: Mapping[str, str] | None = None,
    sandbox_keys: bool = False,
    opener: each_mod.Opener = each_mod.open_file,
    resolve: each_mod.Resolver | None = None,
) -> LoadedManifest:
    """Check `data` (the manifest's bytes) completely and build its Plan. `each` files are
    found relative to `source`, or by `resolve` (a batch's copies) when given."""
    environ = os.environ if env is None else env
    reader = _Reader(data, source, environ, sandbox_keys, opener, resolve)
    return reader.run()


def _decode(data: bytes, file: str) -> str:
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = _byte_position(data, nul)
        message = "binary file (NUL byte); a manifest is UTF-8 YAML text"
        raise ManifestError([Problem(file, line, col, "", message)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _byte_position(data, exc.start)
        message = f"not UTF-8 text (byte 0x{data[exc.start]:02x}); a manifest is UTF-8 YAML"
        raise ManifestError([Problem(file, line, col, "", message)]) from None
    return text.removeprefix("\ufeff")


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    return line, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class _Reader:
    """One pass over one manifest, collecting problems and notices."""

    def __init__(
        self,
        data: bytes,
        source: Path,
        env: Mapping[str, str],
        sandbox_keys: bool,
        opener: each_mod.Opener,
        resolve: each_mod.Resolver | None = None,
    ) -> None:
        self.data = data
        self.source = source
        self.file = str(source)
        self.opener = opener
        self.resolve: each_mod.Resolver = resolve or (lambda name: source.parent / name)
        self.inputs: dict[str, each_mod.EachFile] = {}
        self.report = Report(self.file)
        self.seen_ids: dict[str, Where] = {}
        self.settings = SettingsReader(self.report, env, sandbox_keys)
        self.expects = ExpectReader(
            self.report,
            lambda name: self.resolve(name),
            opener,
            lambda read: self.inputs.setdefault(read.written, read),
        )

    # -- the pass --------------------------------------------------------------------------

    def run(self) -> LoadedManifest:
        text = _decode(self.data, self.file)
        try:
            document = load_yaml(text)
        except YamlError as exc:
            raise self.report.fail_now(exc.line, exc.column, exc.message) from None
        if document.value is None:
            raise self.report.fail_now(
                1, 1, "the manifest is empty; it needs version, name and jobs"
            )
        if not isinstance(document.value, dict):
            kind = "a list" if isinstance(document.value, list) else f"{show(document.value)}"
            raise self.report.fail_now(
                document.pos.line,
                document.pos.column,
                f"the manifest is {kind}, not a mapping; it starts with 'version: 1'",
            )
        self.report.doc, self.report.pos = document.value, document.pos
        for warning in document.warnings:
            self.report.add(
                warning.path, warning.message, where=(self.file, warning.line, warning.column)
            )
        for finding in manifest_checker().findings(self.report.doc):
            self.report.add(finding.path, finding.message, at_key=finding.at_key)
        self.scan_env_refs(self.report.doc, ())
        defaults = _dict(self.report.doc.get("defaults"))
        check_poll(self.report, ("defaults", "poll"), defaults.get("poll"))
        check_positive(self.report, ("defaults", "timeout"), defaults.get("timeout"))
        check_positive(self.report, ("defaults", "max_age"), defaults.get("max_age"))
        declared = _dict(self.report.doc.get("providers"))
        settings = {
            name: self.settings.provider(name, _dict(conf), defaults)
            for name, conf in declared.items()
            if name in PROVIDERS and isinstance(conf, dict)
        }
        for name, made in settings.items():
            budget = check_provider_budget(self.report, name, declared[name].get("budget"))
            if made is not None:
                settings[name] = dataclasses.replace(made, budget=budget)
        specs: list[JobSpec] = []
        jobs = self.report.doc.get("jobs")
        for index, job in enumerate(jobs if isinstance(jobs, list) else []):
            if isinstance(job, dict):
                self.job(index, job, declared, defaults, specs)
            if len(specs) > MAX_JOBS:
                self.report.add(("jobs", index), f"more than {MAX_JOBS:,} jobs; split the batch")
                break
        if self.report.problems:
            raise ManifestError(sorted(set(self.report.problems)))
        return LoadedManifest(
            self.plan(settings, specs), tuple(self.report.notices), tuple(self.inputs.values())
        )

    def plan(self, settings: dict[str, ProviderSettings | None], specs: list[JobSpec]) -> Plan:
        providers = {name: s for name, s in settings.items() if s is not None}
        return Plan(
            name=str(self.report.doc["name"]),
            source=self.source,
            manifest_bytes=self.data,
            manifest_sha256=hashlib.sha256(self.data).hexdigest(),
            providers=providers,
            jobs=tuple(specs),
            secrets=tuple(self.settings.secrets),
            budget=read_budget(self.report.doc.get("budget")),
        )

    # -- small checks ----------------------------------------------------------------------

    def scan_env_refs(self, value: Any, path: PathT) -> None:
        """`${VAR}` is interpolated only in api_key and base_url; say so where it is not."""
        stack: list[tuple[Any, PathT]] = [(value, path)]
        while stack:
            node, where = stack.pop()
            if isinstance(node, dict):
                for key, child in node.items():
                    if (
                        where[:1] == ("providers",)
                        and len(where) == 2
                        and key
                        in (
                            "api_key",
                            "base_url",
                        )
                    ):
                        continue
                    stack.append((child, (*where, key)))
            elif isinstance(node, list):
                stack.extend((child, (*where, i)) for i, child in enumerate(node))
            elif isinstance(node, str) and "${" in node:
                match = ENV_REF.search(node)
                if match:
                    self.report.notice(
                        where,
                        f"{match.group(0)} is not interpolated here; only api_key and "
                        "base_url take ${VAR}",
                    )
        self.report.notices.sort()

    # -- jobs ------------------------------------------------------------------------------

    def job(
        self,
        index: int,
        job: dict[str, Any],
        declared: dict[str, Any],
        defaults: dict[str, Any],
        specs: list[JobSpec],
    ) -> None:
        base: PathT = ("jobs", index)
        provider, job_type = job.get("provider"), job.get("type")
        checker: Checker | None = None
        fetch = dict(_dict(job.get("fetch")))
        info = PROVIDERS.get(provider) if isinstance(provider, str) else None
        if info is not None:
            if isinstance(job_type, str) and job_type in info.job_types:
                checker = job_type_checker(info.name, job_type)
                fetch = {**fetch_defaults(info.name, job_type), **fetch}
            elif isinstance(job_type, str):
                hint = did_you_mean(job_type, info.job_types)
                self.report.add(
                    (*base, "type"),
                    f"unknown type {job_type!r} for provider {info.name}{hint} "
                    f"(valid: {', '.join(info.job_types)})",
                )
            if info.name not in declared:
                self.report.add(
                    (*base, "provider"),
                    f"provider {info.name!r} is not declared under providers; add "
                    f"providers.{info.name}.api_key: ${{{info.api_key_env}}}",
                )
        check_poll(self.report, (*base, "poll"), job.get("poll"))
        check_positive(self.report, (*base, "timeout"), job.get("timeout"))
        check_positive(self.report, (*base, "max_age"), job.get("max_age"))
        conf = _dict(declared.get(provider)) if isinstance(provider, str) else {}
        default_poll = info.default_poll if info is not None else PollPolicy(2.0, 60.0, 1.5)
        template = JobSpec(
            id="",
            provider=str(provider),
            type=str(job_type),
            params={},
            tags=tuple(t for t in _list(job.get("tags")) if isinstance(t, str)),
            timeout=resolve_timeout(
                [job.get("timeout"), conf.get("timeout"), defaults.get("timeout")]
            ),
            poll=resolve_poll(
                [job.get("poll"), conf.get("poll"), defaults.get("poll")], default_poll
            ),
            fetch=fetch,
            retry="failed" if job.get("retry") == "failed" else None,
            max_age=duration(job.get("max_age", defaults.get("max_age"))),
            expect=self.expects.expect(base, job.get("expect"), defaults.get("expect")),
        )
        extra: dict[str, Any] = {key: job[key] for key in ("fetch", "retry") if key in job}
        params, job_id = job.get("params"), job.get("id")
        if not isinstance(job_id, str) or not isinstance(params, dict):
            return
        if "each" in job:
            if len(job_id) <= each_mod.MAX_ID_LENGTH:  # else the schema said it is too long
                self.expand(index, job, job_id, params, extra, checker, template, specs)
            return
        if _ID_SHAPE.match(job_id) and not SLUG.match(job_id):
            if "{" in job_id:
                message = f"{show(job_id)} has placeholders, but the job has no `each`"
            else:
                message = f"{show(job_id)} is not a valid id ({_ID_RULE})"
            self.report.add((*base, "id"), message)
        self.claim_id(job_id, (self.file, *self.report.locate((*base, "id"))), base, job_id)
        if checker is not None:
            for finding in checker.findings({"params": params, **extra}):
                self.report.add((*base, *finding.path), finding.message, at_key=finding.at_key)
        specs.append(_spec(template, job_id, params, len(specs)))

    def claim_id(self, job_id: str, where: Where, base: PathT, shown: str) -> None:
        first = self.seen_ids.get(job_id)
        if first is None:
            self.seen_ids[job_id] = where
            return
        if first[0] != where[0]:
            at = f"{first[0]}:{first[1]}"
        elif first[1] == where[1]:
            at = f"line {first[1]}, column {first[2]}"
        else:
            at = f"line {first[1]}"
        self.report.add(base, f"duplicate id {job_id!r} (first at {at})", where=where, job_id=shown)

    def each_items(self, index: int, spec: Any) -> list[each_mod.Item] | None:
        path: PathT = ("jobs", index, "each")
        if isinstance(spec, list):
            if not spec or not all(isinstance(v, str | int | float | dict) for v in spec):
                return None  # the schema reported it
            positions = [self.report.locate((*path, i)) for i in range(len(spec))]
            return each_mod.items_from_list(spec, self.file, positions)
        if not isinstance(spec, dict) or not isinstance(spec.get("file"), str):
            return None
        name = spec["file"]
        fmt = spec.get("format")
        if fmt not in ("text", "jsonl", "csv"):
            fmt = each_mod.guess_format(name)
        digest = hashlib.sha256()
        try:
            target = self.resolve(name)
            items = each_mod.read_items(target, str(target), fmt, self.opener, digest.update)
        except EachError as exc:
            if exc.line == 0:
                self.report.add((*path, "file"), f"{name!r}: {exc.message}")
            else:
                self.report.add(path, exc.message, where=(exc.file, exc.line, exc.column))
            return None
        self.inputs.setdefault(name, each_mod.EachFile(name, target, digest.hexdigest()))
        return items

    def expand(
        self,
        index: int,
        job: dict[str, Any],
        id_text: str,
        params: dict[str, Any],
        extra: dict[str, Any],
        checker: Checker | None,
        template: JobSpec,
        specs: list[JobSpec],
    ) -> None:
        base: PathT = ("jobs", index)
        items = self.each_items(index, job["each"])
        if items is None:
            return
        literal, uses = each_mod.template_cost([id_text, params])
        placeholders = sum(uses.values())
        if placeholders > MAX_PLACEHOLDERS:
            self.report.add(
                (*base, "params"),
                f"{placeholders:,} placeholders; a job's id and params may use at most "
                f"{MAX_PLACEHOLDERS:,} (repeat the data in the `each` items instead)",
            )
            return
        expanded = 0
        build_id, id_names = each_mod.compile_id(id_text)
        params_template = each_mod.compile_template(params)
        if not self.check_placeholders(base, items[0], id_names, params_template):
            return
        if not id_names and len(items) > 1:
            self.report.add(
                (*base, "id"),
                f"{show(id_text)} has no placeholder, so every item of `each` would get "
                "the same id; add {n} or a field such as {item}",
            )
            return
        used = id_names | params_template.names
        described = failing = 0
        repeats: dict[tuple[Any, ...], list[Any]] = {}
        for n, item in enumerate(items, start=1):
            fields = item.fields(n)
            where = (item.file, item.line, item.column)
            absent = [name for name in sorted(used) if name not in fields]
            if absent:
                self.report.add(
                    (*base, "each"),
                    f"this item has no field {absent[0]!r} (used as {{{absent[0]}}})",
                    where=where,
                    job_id=id_text,
                )
                continue
            expanded += literal + sum(
                count * each_mod.field_size(fields[name]) for name, count in uses.items()
            )
            if expanded > MAX_EXPANDED_CHARS:
                self.report.add(
                    (*base, "each"),
                    f"expanding `each` up to this item makes more than "
                    f"{MAX_EXPANDED_CHARS:,} characters of ids and params; a job may make at "
                    "most that many (use fewer or shorter placeholders, or split the items)",
                    where=where,
                    job_id=id_text,
                )
                return
            job_id = build_id(fields)
            if not SLUG.match(job_id):
                self.report.add(
                    base,
                    f"the id made from this item, {show(job_id)}, is not a valid id ({_ID_RULE})",
                    where=where,
                    job_id=id_text,
                )
                continue
            self.claim_id(job_id, where, base, job_id)
            built = params_template.build(fields)
            if checker is not None and not checker.is_valid({"params": built, **extra}):
                failing += 1
                if described < MAX_DESCRIBED_ITEMS:
                    described += 1
                    self.item_findings(
                        base,
                        checker,
                        {"params": built, **extra},
                        item,
                        job_id,
                        params_template,
                        repeats,
                    )
            specs.append(_spec(template, job_id, built, len(specs)))
        for args, count in repeats.values():
            message = args[1] if count == 1 else f"{args[1]} (and in {count - 1} more items)"
            self.report.add(args[0], message, at_key=args[2], where=args[3], job_id=args[4])
        if failing > described:
            self.report.add(
                (*base, "each"),
                f"{failing - described:,} more items fail validation "
                f"(only the first {described} are described)",
                job_id=id_text,
            )

    def item_findings(
        self,
        base: PathT,
        checker: Checker,
        instance: dict[str, Any],
        item: each_mod.Item,
        job_id: str,
        params_template: each_mod.Template,
        repeats: dict[tuple[Any, ...], list[Any]],
    ) -> None:
        for finding in checker.findings(instance):
            path = (*base, *finding.path)
            relative = finding.path[1:] if finding.path[:1] == ("params",) else None
            from_item = relative is not None and any(
                relative[: len(p)] == p for p in params_template.paths
            )
            if from_item:
                where = (item.file, item.line, item.column)
            else:
                where = (self.file, *self.report.locate(path, finding.at_key))
            key = (where, finding.path, finding.message)
            if key in repeats:
                repeats[key][1] += 1
            else:
                repeats[key] = [(path, finding.message, finding.at_key, where, job_id), 1]

    def check_placeholders(
        self,
        base: PathT,
        first: each_mod.Item,
        id_names: frozenset[str],
        params_template: each_mod.Template,
    ) -> bool:
        available = set(first.fields(1))
        ok = True
        for name in sorted(id_names | params_template.names):
            if name in available:
                continue
            ok = False
            if name in id_names:
                path: PathT = (*base, "id")
            else:
                where = min(p for p, names in params_template.paths.items() if name in names)
                path = (*base, "params", *where)
            if name == "item" and isinstance(first.value, dict):
                fields = ", ".join(sorted(first.value))
                message = (
                    "{item} is not defined: these items have fields "
                    f"({fields}); use them as {{field}}"
                )
            else:
                offered = ", ".join(f"{{{f}}}" for f in sorted(available))
                hint = did_you_mean(name, available)
                message = f"unknown placeholder {{{name}}}{hint} (available: {offered})"
            self.report.add(path, message)
        return ok


def _spec(template: JobSpec, job_id: str, params: Mapping[str, Any], index: int) -> JobSpec:
    return JobSpec(
        id=job_id,
        provider=template.provider,
        type=template.type,
        params=params,
        tags=template.tags,
        timeout=template.timeout,
        poll=template.poll,
        index=index,
        fetch=template.fetch,
        retry=template.retry,
        max_age=template.max_age,
        expect=template.expect,
    )
