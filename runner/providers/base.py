"""What every provider adapter is: static facts (ProviderInfo) plus one small Protocol.

Adapters own the wire format and nothing else. They build requests and parse replies in
pure functions, and their async methods only compose those with `http.send(...)`. They
never sleep, retry, or count: the engine and the ProviderHttp it passes in own time and
limits. Every request an adapter makes goes through that ProviderHttp, so it is gated.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from runner.errors import ErrorKind, NotCancellableError
from runner.plan import EndpointClass, JobSpec, Limits, PollPolicy
from runner.remote import FetchReport, RemoteRef, ResultSink, Status

# -- static facts ----------------------------------------------------------------------------

NO_CANCEL = "provider has no cancel: the remote job runs on"


def one_request(job: JobSpec) -> int:
    return 1


def no_request(job: JobSpec) -> int:
    return 0


def one_each(polls: int) -> int:
    return polls


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    name: str  # registry key and manifest key: "spidra"
    title: str  # "Spidra"
    default_base_url: str
    api_key_env: str  # conventional variable, e.g. SPIDRA_API_KEY
    job_types: tuple[str, ...]
    default_limits: Limits  # the published limits (docs/providers/<name>.md#limits)
    default_poll: PollPolicy  # docs/engineering.md#default-poll-policies
    # The job types the provider's API can cancel (the README's provider table says so);
    # `cancel` of any other type sends nothing and raises NotCancellableError.
    cancellable: tuple[str, ...]
    # The sandbox's API for this provider, as "module:Class" (a ProviderApi subclass whose
    # `prefix` is its mount path): named, not imported, so runner never loads the sandbox.
    sandbox_api: str
    # Where `<name>.<type>.schema.json` of each job type lives; None: runner's schemas/providers.
    schema_dir: Path | None = None
    # The estimate's rules (runner/estimate.py), declared here so it names no provider.
    typical_duration: float = 60.0  # seconds, a guess from the docs: "expected" figures only
    submit_requests: Callable[[JobSpec], int] = one_request  # one submit
    poll_requests: Callable[[int], int] = one_each  # of `polls` polls
    result_requests: Callable[[JobSpec], int] = no_request  # at the least
    estimate_note: str = ""  # the rules above in words, when they are not the defaults
    # Where a job's cost is reported (a key of FetchReport.outcome, so of job.json), in
    # `cost_unit`: what a `budget.credits` cap counts. None: the provider reports no cost.
    cost_field: str | None = None
    cost_unit: str = "credits"

    def can_cancel(self, job_type: str) -> bool:
        return job_type in self.cancellable

    def refuse_cancel(self, job: JobSpec) -> None:
        """NotCancellableError, before anything is sent, for a type that cannot be cancelled."""
        if not self.can_cancel(job.type):
            raise NotCancellableError(NO_CANCEL)


@dataclass(frozen=True, slots=True)
class Submitted:
    ref: RemoteRef
    status: Status | None = None  # when the submit reply already says something useful


# -- the wire seam ---------------------------------------------------------------------------

Expect = Literal["json", "text", "bytes"]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # relative to the provider's base URL (or absolute for out-of-band URLs)
    endpoint: EndpointClass
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    expect: Expect = "json"


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass(frozen=True, slots=True)
class Reply:
    status_code: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes = field(repr=False)

    def json(self) -> Any:
        """The body as JSON; ValueError for anything that is not strict JSON (including the
        NaN / Infinity that Python's parser would accept and no result file may hold)."""
        return json.loads(self.body, parse_constant=_not_json)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def excerpt(self, limit: int = 200) -> str:
        text = self.text.strip().replace("\n", " ")
        return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True, slots=True)
class ApiError:
    kind: ErrorKind
    message: str  # the provider's message, for the user (never contains the key)
    code: str | None = None  # the provider's error code, e.g. TOO_MANY_PENDING_JOBS
    retry_after: float | None = None  # from the body (Spidra/Lobstr retry_after), seconds


class ProviderHttp(Protocol):
    """The engine's gated, retrying client for one provider, passed to every adapter call."""

    @property
    def notes(self) -> Mapping[str, Any]:
        """What this job's adapter noted earlier, in this run or before a crash."""
        ...

    def note(self, key: str, value: Any) -> None:
        """Remember `key` for this job durably (journaled before this returns): a
        multi-step submit records each finished step so a resume never repeats it."""
        ...

    async def send(self, request: Request) -> Reply:
        """Send through the provider's gate. Non-2xx replies raise (classified via the
        adapter's `classify_error`); retries happen here only where they are safe."""
        ...

    async def download(
        self, url: str, dest: Path, *, send_key: bool, max_bytes: int | None = None
    ) -> int:
        """Stream `url` to `dest` (atomically), returning the byte count. `send_key=False`
        for URLs off the provider's API host (signed URLs): no key ever leaves for them."""
        ...


class Adapter(Protocol):
    info: ProviderInfo

    def auth_headers(self, api_key: str) -> dict[str, str]: ...

    def classify_error(self, reply: Reply) -> ApiError:
        """Pure: what a non-2xx reply from this provider means."""
        ...

    async def submit(self, http: ProviderHttp, job: JobSpec) -> Submitted: ...

    async def poll(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> Status: ...

    async def fetch(
        self,
        http: ProviderHttp,
        job: JobSpec,
        ref: RemoteRef,
        status: Status,
        sink: ResultSink,
    ) -> FetchReport: ...

    async def cancel(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> None:
        """Returns only when a cancel request was sent and the provider accepted it. Raises
        NotCancellableError, having sent nothing, where the provider cannot cancel this job
        (`info.refuse_cancel(job)` first); a refused or failed request raises as any call."""
        ...

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        """After an ambiguous submit: find the job on the provider's side if it can list
        jobs (submitted at or after unix time `since`), else return None."""
        ...
