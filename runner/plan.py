"""The plan: what a validated manifest means, as frozen values the engine can run.

`runner.manifest.loader` builds a Plan from a manifest; these are the value types shared by the
manifest, the engine, the journal and the results writer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

EndpointClass = Literal["submit", "status", "results", "download"]
ENDPOINT_CLASSES: tuple[EndpointClass, ...] = ("submit", "status", "results", "download")
Policy = Literal["detach", "cancel"]
# Where a limit's value came from: the manifest ("declared", never exceeded), the provider's
# documentation ("published", never exceeded), or neither: a conservative start the runner
# raises while the provider accepts and lowers on its signals ("learned").
Origin = Literal["declared", "published", "learned"]


class Secret(str):
    """A string that never shows itself in repr() (API keys)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Secret('***')"


@dataclass(frozen=True, slots=True)
class Rate:
    """`rate` requests per `per` seconds, with at most `burst` sent back to back."""

    rate: float
    per: float
    burst: int = 1

    @property
    def per_second(self) -> float:
        return self.rate / self.per


@dataclass(frozen=True, slots=True)
class Limits:
    requests: Rate | None = None  # every call to the provider counts
    endpoints: Mapping[EndpointClass, Rate] = field(default_factory=dict)  # optional splits
    in_flight: int | None = None  # remote jobs not yet terminal
    # "requests", "in_flight" or an endpoint class → where its value came from (see Origin);
    # a limit not listed was declared.
    origin: Mapping[str, Origin] = field(default_factory=dict)

    def origin_of(self, key: str) -> Origin:
        return self.origin.get(key, "declared")

    def origins(self) -> dict[str, Origin]:
        """Every limit set (requests, each endpoint class, in_flight) → its origin."""
        keys = ["requests"] if self.requests else []
        keys += sorted(self.endpoints)
        keys += ["in_flight"] if self.in_flight is not None else []
        return {key: self.origin_of(key) for key in keys}


@dataclass(frozen=True, slots=True)
class PollPolicy:
    initial: float  # seconds before the first poll
    max: float  # ceiling of the interval
    multiplier: float  # growth per poll


@dataclass(frozen=True, slots=True)
class Budget:
    """A spend cap (`budget:`): at most `jobs` submitted, at most `credits` reported spent."""

    jobs: int | None = None
    credits: float | None = None  # in the provider's own unit (ProviderInfo.cost_field)


@dataclass(frozen=True, slots=True)
class Expect:
    """What a finished job must hold to count as succeeded (`expect:`)."""

    min_items: int | None = None  # result items (results.jsonl lines, or 1 for result.json)
    min_files: int | None = None  # files under files/
    schema: Mapping[str, Any] | None = field(default=None, compare=False)  # each item's
    schema_source: str | None = None  # "inline" or the file as written, for messages
    max_failed_share: float = 0.0  # failed items the provider reported, as a share


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str
    base_url: str
    api_key: Secret = field(repr=False)
    api_key_var: str | None  # the ${VAR} it came from, for messages (never the value)
    limits: Limits
    poll: PollPolicy
    timeout: float  # seconds from submit to terminal, default for its jobs
    on_interrupt: Policy = "detach"
    on_timeout: Policy = "detach"
    max_paused: float | None = None  # how long a paused job may stay paused (Lobstr)
    budget: Budget = Budget()  # this provider's spend cap


@dataclass(frozen=True, slots=True)
class JobSpec:
    id: str
    provider: str
    type: str
    params: Mapping[str, Any]
    tags: tuple[str, ...] = ()
    timeout: float = 1800.0
    poll: PollPolicy = PollPolicy(2.0, 60.0, 1.5)
    index: int = 0  # position in the plan (0-based), the submission order
    fetch: Mapping[str, Any] = field(default_factory=dict)  # runner-side: what to download
    retry: str | None = None  # runner-side: "failed" re-runs failed items once
    max_age: float | None = None  # runner-side: an earlier result older than this is not reused
    expect: Expect | None = None  # runner-side: what a finished job must hold


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    source: Path  # the manifest file
    manifest_bytes: bytes = field(repr=False)  # exactly as read, copied into the batch dir
    manifest_sha256: str
    providers: Mapping[str, ProviderSettings]
    jobs: tuple[JobSpec, ...]
    secrets: tuple[Secret, ...] = field(default=(), repr=False)  # redacted everywhere
    budget: Budget = Budget()  # the batch's spend cap

    def job(self, job_id: str) -> JobSpec:
        for spec in self.jobs:
            if spec.id == job_id:
                return spec
        raise KeyError(job_id)
