"""The JSON Schemas (manifest + one per provider job type): finding, loading, checking,
and turning validation errors into messages a user can act on ("did you mean ...").

A fast validator (jsonschema-rs) answers "valid?" for every value; only failures go
through `jsonschema` (pure Python, ~100 µs a call) for its detailed errors.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

import runner
from runner.providers.base import ProviderInfo
from runner.providers.registry import PROVIDERS

MANIFEST_SCHEMA = "manifest.schema.json"

PathPart = str | int


def schema_dir() -> Path:
    """The installed package's copy (`runner/schemas/`) if present, else the repository's."""
    packaged = Path(runner.__file__).parent / "schemas"
    if (packaged / MANIFEST_SCHEMA).is_file():
        return packaged
    return Path(runner.__file__).parent.parent / "schemas"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A schema by its path under schemas/, e.g. `providers/spidra.scrape.schema.json`."""
    data: dict[str, Any] = json.loads((schema_dir() / name).read_text(encoding="utf-8"))
    return data


def job_type_schema_name(provider: str, job_type: str) -> str:
    return f"providers/{provider}.{job_type}.schema.json"


def load_job_type_schema(provider: str, job_type: str) -> dict[str, Any]:
    """A job type's schema: from the provider's own `schema_dir` when it declares one (a
    registered provider outside runner), else from schemas/providers/."""
    info = PROVIDERS.get(provider)
    if info is None or info.schema_dir is None:
        return load_schema(job_type_schema_name(provider, job_type))
    return _load_path(info.schema_dir / f"{provider}.{job_type}.schema.json")


@cache
def _load_path(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def manifest_schema(providers: Iterable[ProviderInfo] | None = None) -> dict[str, Any]:
    """The manifest schema for `providers` (default: every registered one): the published
    file with its provider list, provider enum and per-type refs made from the registry.
    For the built-in providers it equals schemas/manifest.schema.json (a test keeps it so)."""
    infos = list(PROVIDERS.values() if providers is None else providers)
    schema: dict[str, Any] = json.loads(json.dumps(load_schema(MANIFEST_SCHEMA)))
    schema["properties"]["providers"]["properties"] = {
        info.name: {"$ref": "#/$defs/provider"} for info in infos
    }
    job = schema["$defs"]["job"]
    job["properties"]["provider"]["enum"] = [info.name for info in infos]
    job["allOf"] = [
        {
            "if": {
                "required": ["provider", "type"],
                "not": {"required": ["each"]},
                "properties": {"provider": {"const": info.name}, "type": {"const": kind}},
            },
            "then": {"$ref": job_type_schema_name(info.name, kind)},
        }
        for info in infos
        for kind in info.job_types
    ]
    return schema


# -- checking ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem, located by a path into the validated value."""

    path: tuple[PathPart, ...]
    message: str
    at_key: bool = False  # point at the key (unknown keys), not the value


@dataclass(slots=True)
class Checker:
    """A schema with a fast yes/no validator and a slow, explaining one."""

    schema: dict[str, Any]
    fast: Any = field(repr=False)
    slow: Draft202012Validator = field(repr=False)

    @classmethod
    def for_schema(cls, schema: dict[str, Any], registry: Registry[Any] | None = None) -> Checker:
        slow = (
            Draft202012Validator(schema, registry=registry)
            if registry is not None
            else Draft202012Validator(schema)
        )
        return cls(schema, jsonschema_rs.validator_for(schema), slow)

    def is_valid(self, instance: Any) -> bool:
        return bool(self.fast.is_valid(instance))

    def findings(self, instance: Any) -> list[Finding]:
        if self.fast.is_valid(instance):
            return []
        found: list[Finding] = []
        for error in self.slow.iter_errors(instance):
            found.extend(f for f in describe(error) if f not in found)  # `required`: see describe
        if not found:  # the two validators disagree: still say something useful
            try:
                self.fast.validate(instance)
            except jsonschema_rs.ValidationError as exc:
                found.append(Finding(tuple(exc.instance_path), exc.message))
        return found


def manifest_checker() -> Checker:
    """The manifest's structure for the registered providers; job params are checked per
    job type (after `each`)."""
    return _manifest_checker(tuple(PROVIDERS))


@cache
def _manifest_checker(names: tuple[str, ...]) -> Checker:
    schema = manifest_schema(PROVIDERS[name] for name in names)
    schema["$defs"]["job"].pop("allOf", None)  # the per-type refs, applied by the manifest code
    return Checker.for_schema(schema)


@cache
def job_type_checker(provider: str, job_type: str) -> Checker:
    return Checker.for_schema(load_job_type_schema(provider, job_type))


def full_manifest_validator() -> Draft202012Validator:
    """The manifest schema of the registered providers with their per-type refs resolved,
    as an editor sees it."""
    registry: Registry[Any] = Registry()
    for info in PROVIDERS.values():
        for kind in info.job_types:
            contents = load_job_type_schema(info.name, kind)
            registry = registry.with_resource(
                job_type_schema_name(info.name, kind),
                Resource.from_contents(contents, default_specification=DRAFT202012),
            )
    return Draft202012Validator(manifest_schema(), registry=registry)


def fetch_defaults(provider: str, job_type: str) -> dict[str, Any]:
    """The `default` of every fetch option of a job type, e.g. lobstr run: results=True."""
    props = load_job_type_schema(provider, job_type)["properties"]
    fetch = props.get("fetch", {}).get("properties", {})
    return {key: sub["default"] for key, sub in fetch.items() if "default" in sub}


# -- messages ----------------------------------------------------------------------------------


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'timeout'?` when a choice is close, else ``."""
    options = list(choices)
    # difflib's ratio is at most 2·len(choice) / (len(word) + len(choice)): a word over 3× the
    # longest choice cannot reach the 0.6 cutoff, and difflib costs seconds on a MiB-long one.
    longest = max((len(option) for option in options), default=0)
    close = []
    if len(word) <= 3 * longest:
        close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close and len(word) >= 3:  # 'url' for 'file_url', 'timeout_seconds' for 'timeout'
        close = [o for o in options if len(o) >= 3 and (word in o or o in word)][:1]
    return f"; did you mean {close[0]!r}?" if close else ""


def show(value: Any, limit: int = 60) -> str:
    """A short, stable rendering of a value for messages."""
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= limit else text[: limit - 4] + "...'"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return show(value)


def _types(expected: str | Sequence[str]) -> str:
    names = [expected] if isinstance(expected, str) else list(expected)
    words = {"object": "a mapping", "array": "a list", "integer": "an integer"}
    return " or ".join(words.get(name, f"a {name}") for name in names)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def describe(error: ValidationError) -> list[Finding]:
    """Findings for one jsonschema error (one per unknown key; the best branch of oneOf)."""
    path = tuple(error.absolute_path)
    value = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    keyword = error.validator
    expected: Any = error.validator_value
    secret = bool(path) and path[-1] == "api_key"
    shown = "the value" if secret else show(value)
    custom = schema.get("errorMessage")

    if keyword == "additionalProperties" and isinstance(value, dict):
        return _unknown_keys(path, value, schema)
    if keyword == "required" and isinstance(value, dict):
        # From the schema and the instance, not from the library's wording of the message
        # (jsonschema reports each missing key as an error of its own: checker dedupes).
        missing = [key for key in expected if key not in value]
        return [Finding(path, f"missing required key {key!r}") for key in missing]
    if custom and keyword in ("pattern", "format", "type", "const", "enum", "not"):
        prefix = f"{shown} " if not isinstance(value, dict | list) else ""
        return [Finding(path, f"{prefix}{custom}")]
    if keyword in ("oneOf", "anyOf"):
        if custom:
            return [Finding(path, str(custom))]
        branch = _closest_branch(error)
        if branch:
            return [finding for sub in branch for finding in describe(sub)]
        best = best_match(error.context or [])
        return describe(best) if best is not None else [Finding(path, error.message)]
    if keyword == "enum":
        options = list(expected)
        if path and path[-1] == "provider" and isinstance(value, str):
            hint = did_you_mean(value, options)
            return [
                Finding(path, f"unknown provider {value!r}{hint} (valid: {', '.join(options)})")
            ]
        hint = did_you_mean(value, [str(o) for o in options]) if isinstance(value, str) else ""
        listed = ", ".join(show(option) for option in options)
        return [Finding(path, f"{shown} is not one of {listed}{hint}")]
    if keyword == "const":
        if path == ("version",):
            return [Finding(path, f"{shown} is not a supported version (expected 1)")]
        return [Finding(path, f"{shown} must be {show(error.validator_value)}")]
    if keyword == "type":
        wanted = _types(expected)
        if secret:
            return [Finding(path, f"must be {wanted}")]
        return [Finding(path, f"expected {wanted}, got {_kind(value)}")]
    if keyword in ("minLength", "maxLength") and isinstance(value, str):
        bound = expected
        if keyword == "minLength":
            if not value:
                return [Finding(path, "must not be empty")]
            need = f"at least {_plural(bound, 'character')}"
            return [Finding(path, f"{shown} is too short ({need})")]
        detail = f"{_plural(len(value), 'character')}; at most {bound}"
        return [Finding(path, f"{shown} is too long ({detail})")]
    if keyword in ("minItems", "maxItems") and isinstance(value, list):
        bound = expected
        if keyword == "minItems":
            if not value:
                return [Finding(path, f"must not be empty (at least {_plural(bound, 'item')})")]
            return [Finding(path, f"too few items: {len(value)} (at least {bound})")]
        return [Finding(path, f"too many items: {len(value)} (at most {bound})")]
    if keyword == "minProperties":
        return [Finding(path, "must not be empty")]
    if keyword == "uniqueItems":
        return [Finding(path, "has duplicate items")]
    bounds = {
        "minimum": "is less than the minimum of",
        "maximum": "is greater than the maximum of",
        "exclusiveMinimum": "must be greater than",
        "exclusiveMaximum": "must be less than",
    }
    if keyword in bounds:
        return [Finding(path, f"{shown} {bounds[keyword]} {show(error.validator_value)}")]
    if keyword == "pattern":
        return [Finding(path, f"{shown} does not match {error.validator_value!r}")]
    if keyword in ("not", None, False) or error.validator_value is False:
        return [Finding(path, "is not allowed here")]
    return [Finding(path, error.message)]


def _closest_branch(error: ValidationError) -> list[ValidationError]:
    """The errors of the oneOf/anyOf branch whose type matched and that failed least."""
    branches: dict[Any, list[ValidationError]] = {}
    for sub in error.context or []:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    fitting = [
        errors
        for errors in branches.values()
        if not any(e.validator == "type" and not e.relative_path for e in errors)
    ]
    return min(fitting, key=len) if fitting else []


def _unknown_keys(
    path: tuple[PathPart, ...], value: dict[str, Any], schema: dict[str, Any]
) -> list[Finding]:
    known = list(schema.get("properties", {}))
    found = []
    for key in value:
        if key in known:
            continue
        if path == ("providers",):
            hint = did_you_mean(key, known)
            message = f"unknown provider {key!r}{hint} (valid: {', '.join(known)})"
        else:
            hint = did_you_mean(key, known)
            if not hint:
                hint = f" (valid: {', '.join(known)})" if known else " (this mapping takes no keys)"
            message = f"unknown key {key!r}{hint}"
        found.append(Finding((*path, key), message, at_key=True))
    return found
