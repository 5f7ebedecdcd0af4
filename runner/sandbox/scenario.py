"""Sandbox scenarios: the YAML knobs (durations, failures, limits, faults) and their defaults.

A scenario is layered: `defaults` → `providers.<name>` → `providers.<name>.jobs.<type>`.
Job-level layers may only set job knobs (duration, rates, results, sizes, expiry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from runner.durations import parse_duration
from runner.errors import UsageError
from runner.providers.registry import PROVIDERS


def provider_names() -> tuple[str, ...]:
    """Every registered provider: the sandbox speaks each one's API."""
    return tuple(PROVIDERS)


# Spidra's documented pending-job caps per submit kind (docs/providers/spidra.md#limits).
SPIDRA_PENDING_CAPS: Mapping[str, int] = {"scrape": 10, "batch": 50, "crawl": 5}


@dataclass(frozen=True, slots=True)
class Span:
    """A closed range [min, max] from which a seeded value is drawn."""

    min: float
    max: float


@dataclass(frozen=True, slots=True)
class RateLimit:
    requests: int
    per: float  # seconds (wall clock; time_scale does not apply)


@dataclass(frozen=True, slots=True)
class ErrorBurst:
    """In every cycle of `every` requests to a provider, the last `count` get `status`.

    `after_accept` is the share of those (0..1, seeded per request) answered only after the
    handler ran: a submit then created its job and still got the error, the truly ambiguous
    case; the rest are refused before the job exists (it never arrived). `submits_only`:
    count submit requests alone (every `every`-th submit faults, polls never do)."""

    status: int
    count: int
    every: int
    after_accept: float = 0.0
    submits_only: bool = False


@dataclass(frozen=True, slots=True)
class Knobs:
    """Every knob for one (provider, job type); durations are virtual seconds."""

    duration: Span = Span(0.2, 1.5)
    fail_rate: float = 0.0
    partial_rate: float = 0.0
    results: Span = Span(1, 5)
    result_bytes: int = 2_000  # size of generated content per result (approximate)
    large_result_bytes: int = 5_000_000  # Pulse: results this big become {is_url, url}
    expire_after: float | None = None  # virtual seconds after completion; then gone
    rate_limit: RateLimit | None = None
    endpoint_limits: bool = False  # Lobstr: enforce its documented per-path limits
    pending_limits: Mapping[str, int] | None = None  # Spidra TOO_MANY_PENDING_JOBS caps
    max_active: int | None = None  # Skop: 429 concurrency_limit_exceeded above this
    # Undeclared concurrency (any provider): a submit while this many of the provider's jobs
    # are unfinished gets the provider's own "busy" answer (ProviderApi.busy).
    hidden_in_flight: int | None = None
    error_burst: ErrorBurst | None = None
    latency: float = 0.0  # wall seconds added to every API answer
    drop_connection_rate: float = 0.0
    drop_after_accept: bool = True  # a dropped submit still created the job
    keys: tuple[str, ...] | None = None  # accepted keys; None = any non-empty key
    credits: int | None = None  # jobs the account can pay for; then its no-credit answer


JOB_KNOBS = frozenset(
    {
        "duration",
        "fail_rate",
        "partial_rate",
        "results",
        "result_bytes",
        "large_result_bytes",
        "expire_after",
    }
)
ALL_KNOBS = frozenset(f.name for f in fields(Knobs))


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole scenario: the time scale and the resolved knobs per provider and job type."""

    time_scale: float = 1.0
    providers: Mapping[str, Knobs] = field(default_factory=dict)
    jobs: Mapping[tuple[str, str], Knobs] = field(default_factory=dict)

    def knobs(self, provider: str, kind: str | None = None) -> Knobs:
        if kind is not None and (provider, kind) in self.jobs:
            return self.jobs[(provider, kind)]
        return self.providers.get(provider, _DEFAULT_KNOBS)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, source: str = "scenario") -> Scenario:
        """Build from loaded YAML/JSON; any problem is a UsageError naming the key."""
        data = {} if data is None else data
        if not isinstance(data, Mapping):
            raise UsageError(f"{source}: expected a mapping at the top level")
        _check_keys(data, {"time_scale", "defaults", "providers"}, source, "")
        time_scale = _number(data.get("time_scale", 1.0), source, "time_scale", positive=True)
        defaults = _apply(_DEFAULT_KNOBS, data.get("defaults") or {}, source, "defaults", ALL_KNOBS)
        raw_providers = data.get("providers") or {}
        if not isinstance(raw_providers, Mapping):
            raise UsageError(f"{source}: providers: expected a mapping")
        names = provider_names()
        providers: dict[str, Knobs] = dict.fromkeys(names, defaults)
        jobs: dict[tuple[str, str], Knobs] = {}
        for name, raw in raw_providers.items():
            if name not in names:
                raise UsageError(
                    f"{source}: providers.{name}: unknown provider "
                    f"(expected one of: {', '.join(names)})"
                )
            raw = raw or {}
            if not isinstance(raw, Mapping):
                raise UsageError(f"{source}: providers.{name}: expected a mapping")
            knobs = _apply(
                defaults,
                {k: v for k, v in raw.items() if k != "jobs"},
                source,
                f"providers.{name}",
                ALL_KNOBS,
            )
            providers[name] = knobs
            raw_jobs = raw.get("jobs") or {}
            if not isinstance(raw_jobs, Mapping):
                raise UsageError(f"{source}: providers.{name}.jobs: expected a mapping")
            for kind, raw_job in raw_jobs.items():
                where = f"providers.{name}.jobs.{kind}"
                jobs[(name, str(kind))] = _apply(knobs, raw_job or {}, source, where, JOB_KNOBS)
        return cls(time_scale=time_scale, providers=providers, jobs=jobs)


_DEFAULT_KNOBS = Knobs()


def speed_up(scenario: Scenario, factor: float) -> Scenario:
    """The same scenario `factor` times faster: job durations (time_scale) and every
    provider's rate-limit window divided by `factor`, so a limit of R per second becomes
    factor x R. Lobstr's built-in per-path limits (endpoint_limits) stay as documented."""
    if factor <= 0:
        raise UsageError(f"time scale {factor:g}: must be positive")

    def faster(knobs: Knobs) -> Knobs:
        limit = knobs.rate_limit
        if limit is None:
            return knobs
        return replace(knobs, rate_limit=RateLimit(limit.requests, limit.per / factor))

    return Scenario(
        time_scale=scenario.time_scale * factor,
        providers={name: faster(k) for name, k in scenario.providers.items()},
        jobs={key: faster(k) for key, k in scenario.jobs.items()},
    )


def load_scenario(path: Path) -> Scenario:
    """Read a scenario YAML file; unreadable or invalid files are a UsageError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read scenario {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: invalid YAML: {exc}") from exc
    return Scenario.from_dict(data, source=str(path))


# -- parsing helpers -------------------------------------------------------------------------


def _check_keys(
    raw: Mapping[str, Any], allowed: frozenset[str] | set[str], src: str, at: str
) -> None:
    for key in raw:
        if key not in allowed:
            where = f"{at}.{key}" if at else str(key)
            raise UsageError(
                f"{src}: {where}: unknown key (expected one of: {', '.join(sorted(allowed))})"
            )


def _apply(base: Knobs, raw: Any, src: str, at: str, allowed: frozenset[str]) -> Knobs:
    if not isinstance(raw, Mapping):
        raise UsageError(f"{src}: {at}: expected a mapping")
    _check_keys(raw, allowed, src, at)
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"{at}.{key}"
        changes[key] = _PARSERS[key](value, src, where)
    return replace(base, **changes)


def _number(value: Any, src: str, at: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{src}: {at}: expected a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise UsageError(f"{src}: {at}: must be {'positive' if positive else 'non-negative'}")
    return float(value)


def _seconds(value: Any, src: str, at: str) -> float:
    """A number of seconds, or a duration string such as 500ms, 2s, 10m."""
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise UsageError(f"{src}: {at}: {exc}") from exc
    return _number(value, src, at)


def _int(value: Any, src: str, at: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{src}: {at}: expected an integer, got {value!r}")
    if value < minimum:
        raise UsageError(f"{src}: {at}: must be at least {minimum}")
    return value


def _rate(value: Any, src: str, at: str) -> float:
    rate = _number(value, src, at)
    if rate > 1:
        raise UsageError(f"{src}: {at}: must be between 0 and 1")
    return rate


def _span(value: Any, src: str, at: str, *, seconds: bool) -> Span:
    parse = _seconds if seconds else _number
    if not isinstance(value, Mapping):
        single = parse(value, src, at)
        return Span(single, single)
    _check_keys(value, {"min", "max"}, src, at)
    if "min" not in value or "max" not in value:
        raise UsageError(f"{src}: {at}: needs both min and max")
    low, high = parse(value["min"], src, f"{at}.min"), parse(value["max"], src, f"{at}.max")
    if low > high:
        raise UsageError(f"{src}: {at}: min is greater than max")
    return Span(low, high)


def _rate_limit(value: Any, src: str, at: str) -> RateLimit | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise UsageError(f"{src}: {at}: expected {{requests, per}}")
    _check_keys(value, {"requests", "per"}, src, at)
    if "requests" not in value or "per" not in value:
        raise UsageError(f"{src}: {at}: needs both requests and per")
    per = _seconds(value["per"], src, f"{at}.per")
    if per <= 0:
        raise UsageError(f"{src}: {at}.per: must be positive")
    return RateLimit(_int(value["requests"], src, f"{at}.requests", minimum=1), per)


def _burst(value: Any, src: str, at: str) -> ErrorBurst | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise UsageError(f"{src}: {at}: expected {{status, count, every, after_accept, on}}")
    _check_keys(value, {"status", "count", "every", "after_accept", "on"}, src, at)
    status = _int(value.get("status", 503), src, f"{at}.status", minimum=400)
    if status > 599:
        raise UsageError(f"{src}: {at}.status: must be an HTTP error status (400-599)")
    count = _int(value.get("count", 1), src, f"{at}.count", minimum=1)
    every = _int(value.get("every", 10), src, f"{at}.every", minimum=1)
    if count > every:
        raise UsageError(f"{src}: {at}: count must not exceed every")
    after = value.get("after_accept", False)
    share = float(after) if isinstance(after, bool) else _rate(after, src, f"{at}.after_accept")
    on = value.get("on", "requests")
    if on not in ("requests", "submits"):
        raise UsageError(f"{src}: {at}.on: expected requests or submits, got {on!r}")
    return ErrorBurst(status, count, every, share, on == "submits")


def _pending(value: Any, src: str, at: str) -> Mapping[str, int] | None:
    if value is None or value is False:
        return None
    if value is True:
        return dict(SPIDRA_PENDING_CAPS)
    if not isinstance(value, Mapping):
        raise UsageError(f"{src}: {at}: expected true or a mapping of kind to cap")
    _check_keys(value, set(SPIDRA_PENDING_CAPS), src, at)
    return {str(k): _int(v, src, f"{at}.{k}", minimum=1) for k, v in value.items()}


def _keys(value: Any, src: str, at: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(k, str) and k for k in value):
        raise UsageError(f"{src}: {at}: expected a list of non-empty strings")
    return tuple(value)


def _bool(value: Any, src: str, at: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{src}: {at}: expected true or false, got {value!r}")
    return value


def _optional_seconds(value: Any, src: str, at: str) -> float | None:
    return None if value is None else _seconds(value, src, at)


def _optional_int(value: Any, src: str, at: str) -> int | None:
    return None if value is None else _int(value, src, at, minimum=1)


_PARSERS: dict[str, Any] = {
    "duration": lambda v, s, a: _span(v, s, a, seconds=True),
    "fail_rate": _rate,
    "partial_rate": _rate,
    "results": lambda v, s, a: _span(v, s, a, seconds=False),
    "result_bytes": lambda v, s, a: _int(v, s, a),
    "large_result_bytes": lambda v, s, a: _int(v, s, a, minimum=1),
    "expire_after": _optional_seconds,
    "rate_limit": _rate_limit,
    "endpoint_limits": _bool,
    "pending_limits": _pending,
    "max_active": _optional_int,
    "hidden_in_flight": _optional_int,
    "error_burst": _burst,
    "latency": _seconds,
    "drop_connection_rate": _rate,
    "drop_after_accept": _bool,
    "keys": _keys,
    "credits": lambda v, s, a: None if v is None else _int(v, s, a),
}
assert set(_PARSERS) == ALL_KNOBS
