"""Manifest → Plan: read the YAML, check all of it at once (every problem located), resolve
`${ENV}`, expand `each:`, and build the frozen Plan the engine runs.

`parse_manifest` decides (it reads nothing but `each` files, through an injected opener);
`load_manifest` reads the file with a size cap and calls it.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import each as each_mod
from runner.durations import DURATION_PATTERN, format_duration, parse_duration
from runner.errors import ManifestError, Problem
from runner.plan import (
    ENDPOINT_CLASSES,
    EndpointClass,
    JobSpec,
    Limits,
    Plan,
    Policy,
    PollPolicy,
    ProviderSettings,
    Rate,
    Secret,
)
from runner.providers import PROVIDERS
from runner.schemas import (
    Checker,
    did_you_mean,
    fetch_defaults,
    job_type_checker,
    manifest_checker,
    show,
)
from runner.yamlsafe import Pos, YamlError, load_yaml

MAX_MANIFEST_BYTES = 5 * 1024 * 1024
MAX_JOBS = 1_000_000
MAX_DESCRIBED_ITEMS = 20  # failing `each` items explained in full, per job
DEFAULT_TIMEOUT = 1800.0
SANDBOX_KEY = "sandbox-key"

SLUG = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BARE_ENV = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_ID_SHAPE = re.compile(r"^[a-z0-9{][A-Za-z0-9._{}-]*$")  # the schema's id pattern
_HTTP_URL = re.compile(r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]+\S*$")
_DURATION = re.compile(DURATION_PATTERN)
_SIMPLE_KEY = re.compile(r"^[A-Za-z_$][A-Za-z0-9_-]*$")
_ID_RULE = "lower-case letters, digits, '.', '_', '-'"

PathT = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class LoadedManifest:
    plan: Plan
    notices: tuple[str, ...] = ()


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
) -> LoadedManifest:
    """Check `data` (the manifest's bytes) completely and build its Plan."""
    reader = _Reader(data, source, os.environ if env is None else env, sandbox_keys, opener)
    return reader.run()


def build_plan(loaded: LoadedManifest) -> Plan:
    """The plan of a loaded manifest (kept for symmetry with the design's data flow)."""
    return loaded.plan


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


def _duration(value: Any) -> float | None:
    if isinstance(value, str) and _DURATION.match(value):
        return parse_duration(value)
    return None


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
    ) -> None:
        self.data = data
        self.source = source
        self.file = str(source)
        self.env = env
        self.sandbox_keys = sandbox_keys
        self.opener = opener
        self.problems: list[Problem] = []
        self.notices: list[str] = []
        self.doc: dict[str, Any] = {}
        self.pos = Pos(1, 1)
        self.seen_ids: dict[str, tuple[str, int, int]] = {}

    # -- locating and reporting ------------------------------------------------------------

    def locate(self, path: PathT, at_key: bool = False) -> tuple[int, int]:
        node = self.pos
        for step in path:
            child = node.child(step)
            if child is None:
                return node.line, node.column
            node = child
        if at_key and node.key_line:
            return node.key_line, node.key_column
        return node.line, node.column

    def render(self, path: PathT, job_id: str | None = None) -> str:
        out = ""
        for index, step in enumerate(path):
            if isinstance(step, int):
                out += f"[{step}]"
                if index == 1 and path[0] == "jobs":
                    shown = job_id if job_id is not None else self._job_id(step)
                    if shown is not None:
                        out += f" (id: {shown})"
            elif _SIMPLE_KEY.match(step):
                out += f".{step}" if out else step
            else:
                out += f"[{step!r}]"
        return out

    def _job_id(self, index: int) -> str | None:
        jobs = self.doc.get("jobs")
        if isinstance(jobs, list) and index < len(jobs) and isinstance(jobs[index], dict):
            job_id = jobs[index].get("id")
            return job_id if isinstance(job_id, str) else None
        return None

    def add(
        self,
        path: PathT,
        message: str,
        *,
        at_key: bool = False,
        where: tuple[str, int, int] | None = None,
        job_id: str | None = None,
    ) -> None:
        shown = path[:-1] if at_key else path
        if where is None:
            line, col = self.locate(path, at_key)
            where = (self.file, line, col)
        self.problems.append(
            Problem(where[0], where[1], where[2], self.render(shown, job_id), message)
        )

    def notice(self, path: PathT, message: str) -> None:
        line, col = self.locate(path)
        self.notices.append(f"notice: {self.file}:{line}:{col}: {self.render(path)}: {message}")

    def fail_now(self, line: int, column: int, message: str) -> ManifestError:
        return ManifestError([Problem(self.file, line, column, "", message)])

    # -- the pass --------------------------------------------------------------------------

    def run(self) -> LoadedManifest:
        text = _decode(self.data, self.file)
        try:
            document = load_yaml(text)
        except YamlError as exc:
            raise self.fail_now(exc.line, exc.column, exc.message) from None
        if document.value is None:
            raise self.fail_now(1, 1, "the manifest is empty; it needs version, name and jobs")
        if not isinstance(document.value, dict):
            kind = "a list" if isinstance(document.value, list) else f"{show(document.value)}"
            raise self.fail_now(
                document.pos.line,
                document.pos.column,
                f"the manifest is {kind}, not a mapping; it starts with 'version: 1'",
            )
        self.doc, self.pos = document.value, document.pos
        for warning in document.warnings:
            self.add(warning.path, warning.message, where=(self.file, warning.line, warning.column))
        for finding in manifest_checker().findings(self.doc):
            self.add(finding.path, finding.message, at_key=finding.at_key)
        self.scan_env_refs(self.doc, ())
        defaults = _dict(self.doc.get("defaults"))
        self.check_poll(("defaults", "poll"), defaults.get("poll"))
        self.check_positive(("defaults", "timeout"), defaults.get("timeout"))
        declared = _dict(self.doc.get("providers"))
        settings = {
            name: self.provider(name, _dict(conf), defaults)
            for name, conf in declared.items()
            if name in PROVIDERS and isinstance(conf, dict)
        }
        specs: list[JobSpec] = []
        jobs = self.doc.get("jobs")
        for index, job in enumerate(jobs if isinstance(jobs, list) else []):
            if isinstance(job, dict):
                self.job(index, job, declared, defaults, specs)
            if len(specs) > MAX_JOBS:
                self.add(("jobs", index), f"more than {MAX_JOBS:,} jobs; split the batch")
                break
        if self.problems:
            raise ManifestError(sorted(set(self.problems)))
        return LoadedManifest(self.plan(settings, specs), tuple(self.notices))

    def plan(self, settings: dict[str, ProviderSettings | None], specs: list[JobSpec]) -> Plan:
        providers = {name: s for name, s in settings.items() if s is not None}
        secrets: list[Secret] = []
        for provider in providers.values():
            if provider.api_key and provider.api_key not in secrets:
                secrets.append(provider.api_key)
        return Plan(
            name=str(self.doc["name"]),
            source=self.source,
            manifest_bytes=self.data,
            manifest_sha256=hashlib.sha256(self.data).hexdigest(),
            providers=providers,
            jobs=tuple(specs),
            secrets=tuple(secrets),
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
                    self.notice(
                        where,
                        f"{match.group(0)} is not interpolated here; only api_key and "
                        "base_url take ${VAR}",
                    )
        self.notices.sort()

    def check_positive(self, path: PathT, value: Any) -> float | None:
        seconds = _duration(value)
        if seconds is not None and seconds <= 0:
            self.add(path, f"{show(value)} must be longer than 0")
            return None
        return seconds

    def check_poll(self, path: PathT, poll: Any) -> None:
        if not isinstance(poll, dict):
            return
        initial = self.check_positive((*path, "initial"), poll.get("initial"))
        ceiling = self.check_positive((*path, "max"), poll.get("max"))
        if initial is not None and ceiling is not None and ceiling < initial:
            self.add(
                (*path, "max"),
                f"{show(poll['max'])} is shorter than initial ({poll['initial']})",
            )

    # -- providers -------------------------------------------------------------------------

    def provider(
        self, name: str, conf: dict[str, Any], defaults: dict[str, Any]
    ) -> ProviderSettings | None:
        info = PROVIDERS[name]
        base = ("providers", name)
        key, key_var = self.api_key(name, conf.get("api_key"))
        base_url = self.base_url(name, conf.get("base_url"))
        self.check_poll((*base, "poll"), conf.get("poll"))
        timeout = self.check_positive((*base, "timeout"), conf.get("timeout"))
        self.check_positive((*base, "max_paused"), conf.get("max_paused"))
        limits = self.limits(base, _dict(conf.get("limits")), info.default_limits)
        if key is None or base_url is None:
            return None
        return ProviderSettings(
            name=name,
            base_url=base_url,
            api_key=key,
            api_key_var=key_var,
            limits=limits,
            poll=_resolve_poll([conf.get("poll"), defaults.get("poll")], info.default_poll),
            timeout=timeout or _duration(defaults.get("timeout")) or DEFAULT_TIMEOUT,
            on_interrupt=_policy(conf.get("on_interrupt")),
            on_timeout=_policy(conf.get("on_timeout")),
            max_paused=_duration(conf.get("max_paused")),
        )

    def api_key(self, name: str, raw: Any) -> tuple[Secret | None, str | None]:
        path = ("providers", name, "api_key")
        conventional = PROVIDERS[name].api_key_env
        if not isinstance(raw, str) or not raw:
            return None, None  # the schema said what is wrong
        names = ENV_REF.findall(raw)
        if not names:
            bare = _BARE_ENV.match(raw)
            if bare:
                self.add(path, f"{raw!r} is not interpolated; write ${{{bare.group(1)}}}")
                return None, None
            self.notice(
                path,
                "the key is written in the manifest; keep it in the environment: "
                f"api_key: ${{{conventional}}}",
            )
            return Secret(raw), None
        missing = [var for var in names if not self.env.get(var)]
        if missing:
            if self.sandbox_keys:
                self.notices.append(
                    f"notice: {missing[0]} is not set; using a sandbox key for {name}"
                )
                return Secret(SANDBOX_KEY), names[0]
            for var in missing:
                state = "is empty" if var in self.env else "is not set"
                self.add(path, f"environment variable {var} {state}")
            return None, names[0]
        return Secret(ENV_REF.sub(lambda m: self.env[m.group(1)], raw)), names[0]

    def base_url(self, name: str, raw: Any) -> str | None:
        default = PROVIDERS[name].default_base_url
        if raw is None:
            return default
        if not isinstance(raw, str):
            return None
        path = ("providers", name, "base_url")
        names = ENV_REF.findall(raw)
        missing = [var for var in names if not self.env.get(var)]
        if missing:
            if self.sandbox_keys:
                self.notices.append(f"notice: {missing[0]} is not set; using {default} for {name}")
                return default
            for var in missing:
                state = "is empty" if var in self.env else "is not set"
                self.add(path, f"environment variable {var} {state}")
            return None
        url = ENV_REF.sub(lambda m: self.env[m.group(1)], raw)
        if not _HTTP_URL.match(url):
            if names:
                self.add(path, f"{', '.join(names)} must hold an http(s) URL")
            return None
        return url

    def limits(self, base: PathT, conf: dict[str, Any], published: Limits) -> Limits:
        path = (*base, "limits")
        requests = self.rate((*path, "requests"), conf.get("requests")) or published.requests
        endpoints: dict[EndpointClass, Rate] = dict(published.endpoints)
        for endpoint in ENDPOINT_CLASSES:
            rate = self.rate((*path, endpoint), conf.get(endpoint))
            if rate is not None:
                endpoints[endpoint] = rate
        in_flight = conf.get("in_flight")
        if not isinstance(in_flight, int) or isinstance(in_flight, bool) or in_flight < 1:
            in_flight = published.in_flight
        return Limits(requests=requests, endpoints=endpoints, in_flight=in_flight)

    def rate(self, path: PathT, conf: Any) -> Rate | None:
        if not isinstance(conf, dict):
            return None
        rate, burst = conf.get("rate"), conf.get("burst", 1)
        per = self.check_positive((*path, "per"), conf.get("per", "1s"))
        valid_rate = isinstance(rate, int | float) and not isinstance(rate, bool) and rate > 0
        valid_burst = isinstance(burst, int) and not isinstance(burst, bool) and burst >= 1
        if not (valid_rate and valid_burst and per):
            return None
        assert isinstance(rate, int | float)
        assert isinstance(burst, int)
        return Rate(float(rate), per, burst)

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
                self.add(
                    (*base, "type"),
                    f"unknown type {job_type!r} for provider {info.name}{hint} "
                    f"(valid: {', '.join(info.job_types)})",
                )
            if info.name not in declared:
                self.add(
                    (*base, "provider"),
                    f"provider {info.name!r} is not declared under providers; add "
                    f"providers.{info.name}.api_key: ${{{info.api_key_env}}}",
                )
        self.check_poll((*base, "poll"), job.get("poll"))
        timeout = self.check_positive((*base, "timeout"), job.get("timeout"))
        conf = _dict(declared.get(provider)) if isinstance(provider, str) else {}
        default_poll = info.default_poll if info is not None else PollPolicy(2.0, 60.0, 1.5)
        template = JobSpec(
            id="",
            provider=str(provider),
            type=str(job_type),
            params={},
            tags=tuple(t for t in _list(job.get("tags")) if isinstance(t, str)),
            timeout=timeout
            or _duration(conf.get("timeout"))
            or _duration(defaults.get("timeout"))
            or DEFAULT_TIMEOUT,
            poll=_resolve_poll(
                [job.get("poll"), conf.get("poll"), defaults.get("poll")], default_poll
            ),
            fetch=fetch,
            retry="failed" if job.get("retry") == "failed" else None,
        )
        extra: dict[str, Any] = {key: job[key] for key in ("fetch", "retry") if key in job}
        params, job_id = job.get("params"), job.get("id")
        if not isinstance(job_id, str) or not isinstance(params, dict):
            return
        if "each" in job:
            self.expand(index, job, job_id, params, extra, checker, template, specs)
            return
        if _ID_SHAPE.match(job_id) and not SLUG.match(job_id):
            if "{" in job_id:
                message = f"{show(job_id)} has placeholders, but the job has no `each`"
            else:
                message = f"{show(job_id)} is not a valid id ({_ID_RULE})"
            self.add((*base, "id"), message)
        self.claim_id(job_id, (self.file, *self.locate((*base, "id"))), base, job_id)
        if checker is not None:
            for finding in checker.findings({"params": params, **extra}):
                self.add((*base, *finding.path), finding.message, at_key=finding.at_key)
        specs.append(_spec(template, job_id, params, len(specs)))

    def claim_id(self, job_id: str, where: tuple[str, int, int], base: PathT, shown: str) -> None:
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
        self.add(base, f"duplicate id {job_id!r} (first at {at})", where=where, job_id=shown)

    def each_items(self, index: int, spec: Any) -> list[each_mod.Item] | None:
        path: PathT = ("jobs", index, "each")
        if isinstance(spec, list):
            if not spec or not all(isinstance(v, str | int | float | dict) for v in spec):
                return None  # the schema reported it
            positions = [self.locate((*path, i)) for i in range(len(spec))]
            return each_mod.items_from_list(spec, self.file, positions)
        if not isinstance(spec, dict) or not isinstance(spec.get("file"), str):
            return None
        name = spec["file"]
        fmt = spec.get("format")
        if fmt not in ("text", "jsonl", "csv"):
            fmt = each_mod.guess_format(name)
        target = self.source.parent / name
        display = str(Path(self.file).parent / name)
        try:
            return each_mod.read_items(target, display, fmt, self.opener)
        except each_mod.EachError as exc:
            if exc.line == 0:
                self.add((*path, "file"), f"{name!r}: {exc.message}")
            else:
                self.add(path, exc.message, where=(exc.file, exc.line, exc.column))
            return None

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
        build_id, id_names = each_mod.compile_id(id_text)
        params_template = each_mod.compile_template(params)
        if not self.check_placeholders(base, items[0], id_names, params_template):
            return
        if not id_names and len(items) > 1:
            self.add(
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
                self.add(
                    (*base, "each"),
                    f"this item has no field {absent[0]!r} (used as {{{absent[0]}}})",
                    where=where,
                    job_id=id_text,
                )
                continue
            job_id = build_id(fields)
            if not SLUG.match(job_id):
                self.add(
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
            self.add(args[0], message, at_key=args[2], where=args[3], job_id=args[4])
        if failing > described:
            self.add(
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
                where = (self.file, *self.locate(path, finding.at_key))
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
            self.add(path, message)
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
    )


def _policy(value: Any) -> Policy:
    return "cancel" if value == "cancel" else "detach"


def _resolve_poll(layers: list[Any], fallback: PollPolicy) -> PollPolicy:
    """Field by field, the first layer that sets it (job > provider > defaults > built-in)."""

    def pick(name: str, default: float) -> float:
        for layer in layers:
            if isinstance(layer, dict):
                value = layer.get(name)
                if name == "multiplier":
                    if (
                        isinstance(value, int | float)
                        and not isinstance(value, bool)
                        and value >= 1
                    ):
                        return float(value)
                else:
                    seconds = _duration(value)
                    if seconds:
                        return seconds
        return default

    initial = pick("initial", fallback.initial)
    ceiling = pick("max", fallback.max)
    return PollPolicy(initial, max(initial, ceiling), pick("multiplier", fallback.multiplier))


def describe_poll(poll: PollPolicy) -> str:
    return f"{format_duration(poll.initial)} x{poll.multiplier:g} up to {format_duration(poll.max)}"
