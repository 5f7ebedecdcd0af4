"""The sandbox's shared machinery: state, the job timeline, and the per-request pipeline.

Every provider endpoint runs through `ProviderApi.route`: books → rate limit → auth → injected
faults (error burst, dropped connection, latency) → the provider's handler. Provider modules
subclass ProviderApi with their auth header, error body and routes.
"""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from random import Random
from typing import Any, ClassVar

import anyio
import httpx
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from runner.sandbox import determinism as det
from runner.sandbox.books import Books, ProviderBooks
from runner.sandbox.files import FileStore
from runner.sandbox.limits import SlidingWindow, retry_after_header
from runner.sandbox.scenario import Knobs, RateLimit, Scenario, provider_names

Clock = Callable[[], float]
Handler = Callable[[Request], Awaitable[Response]]


class Phase(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"  # succeeded with failed items
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self not in (Phase.QUEUED, Phase.RUNNING)


@dataclass(frozen=True, slots=True)
class View:
    """A job as seen at one instant: its phase, progress 0..1 and virtual elapsed seconds."""

    phase: Phase
    progress: float
    elapsed: float


class Job:
    """One remote job. Its whole future is drawn at creation from its seeded labels."""

    __slots__ = (
        "body",
        "cancelled_at",
        "created",
        "created_offset",
        "extra",
        "id",
        "key",
        "kind",
        "knobs",
        "labels",
        "n_results",
        "outcome",
        "provider",
        "queue_s",
        "run_s",
        "scale",
        "wall",
    )

    def __init__(
        self,
        *,
        provider: str,
        kind: str,
        body: Any,
        key: str,
        labels: tuple[object, ...],
        knobs: Knobs,
        created: float,
        scale: float,
        make_id: Callable[[bytes], str],
        wall: float = 0.0,
    ) -> None:
        self.provider = provider
        self.kind = kind
        self.body = body
        self.key = key
        self.labels = labels
        self.knobs = knobs
        self.created = created
        self.scale = scale
        self.wall = wall  # real unix time of creation: listings only (see listed_iso)
        self.id = make_id(det.derive(*labels, "id"))
        r = self.rng("timeline")
        duration = r.uniform(knobs.duration.min, knobs.duration.max)
        self.queue_s = duration * r.uniform(0.1, 0.3)
        self.run_s = duration - self.queue_s
        draw = r.random()
        if draw < knobs.fail_rate:
            self.outcome = Phase.FAILED
        elif draw < knobs.fail_rate + knobs.partial_rate:
            self.outcome = Phase.PARTIAL
        else:
            self.outcome = Phase.SUCCEEDED
        self.n_results = r.randint(int(knobs.results.min), int(knobs.results.max))
        self.created_offset = round(r.uniform(0, 6 * 3600), 3)
        self.cancelled_at: float | None = None  # virtual elapsed at cancellation
        self.extra: dict[str, Any] = {}

    def rng(self, *labels: object) -> Random:
        return det.rng(*self.labels, *labels)

    def digest(self, *labels: object) -> bytes:
        return det.derive(*self.labels, *labels)

    @property
    def total_s(self) -> float:
        return self.queue_s + self.run_s

    def elapsed(self, now: float) -> float:
        return (now - self.created) * self.scale

    def view(self, now: float) -> View:
        e = self.elapsed(now)
        total = self.queue_s + self.run_s
        cancelled = self.cancelled_at
        if cancelled is not None and e >= cancelled:
            return View(Phase.CANCELLED, min(max(cancelled - self.queue_s, 0) / self.run_s, 1), e)
        if e < self.queue_s:
            return View(Phase.QUEUED, 0.0, e)
        if e < total:
            return View(Phase.RUNNING, (e - self.queue_s) / self.run_s if self.run_s else 1.0, e)
        expire = self.knobs.expire_after
        if expire is not None and e >= total + expire:
            return View(Phase.EXPIRED, 1.0, e)
        return View(self.outcome, 1.0, e)

    def expired(self, now: float) -> bool:
        """Its results are purged at `now`: every file of it answers 410."""
        return self.view(now).phase is Phase.EXPIRED

    def cancel(self, now: float) -> bool:
        """Cancel if still running at `now`; False when it had already finished."""
        e = self.elapsed(now)
        if self.cancelled_at is not None:
            return e >= self.cancelled_at
        if e >= self.total_s:
            return False
        self.cancelled_at = e
        return True

    # virtual timestamps (seeded, clock-free)
    def at(self, offset: float, **kw: Any) -> str:
        return det.iso(self.created_offset + offset, **kw)

    def created_iso(self, **kw: Any) -> str:
        return self.at(0.0, **kw)

    def listed_iso(self, **kw: Any) -> str:
        """The creation time listing endpoints show: the real clock, so a client can tell
        "created since my submit" (job payloads keep the virtual, reproducible times)."""
        return det.wall_iso(self.wall, **kw)

    def started_iso(self, **kw: Any) -> str:
        return self.at(self.queue_s, **kw)

    def finished_iso(self, view: View, **kw: Any) -> str:
        if view.phase is Phase.CANCELLED and self.cancelled_at is not None:
            return self.at(self.cancelled_at, **kw)
        return self.at(self.total_s, **kw)


def item_failed(job: Job, index: int, count: int) -> bool:
    """Which items of a partial job failed: every third, and always at least the last one."""
    if job.outcome is Phase.FAILED:
        return True
    if job.outcome is not Phase.PARTIAL:
        return False
    return index % 3 == 2 or (index == count - 1 and count < 3)


class Sandbox:
    """All mutable state of one sandbox app: jobs, books, files, occurrence counters."""

    def __init__(self, *, seed: int, scenario: Scenario, clock: Clock) -> None:
        self.seed = seed
        self.scenario = scenario
        self.clock = clock
        names = provider_names()
        self.books = Books({name: scenario.knobs(name).rate_limit for name in names})
        self.files = FileStore(self.books, clock)
        self.jobs: dict[str, dict[str, Job]] = {name: {} for name in names}
        # Per provider, the clock time each unfinished job ends (a heap): `active` counts
        # them in O(log n) per ended job, where a scan of every job would be O(n) per submit.
        self._ends: dict[str, list[float]] = {name: [] for name in names}
        self._occurrences: dict[tuple[str, str, str], int] = {}
        self._wall0, self._clock0 = time.time(), clock()

    def wall(self) -> float:
        """Real unix time, moving with `clock` (a test driving the clock moves it too)."""
        return self._wall0 + (self.clock() - self._clock0)

    def knobs(self, provider: str, kind: str | None = None) -> Knobs:
        return self.scenario.knobs(provider, kind)

    def create_job(
        self,
        provider: str,
        kind: str,
        body: Any,
        make_id: Callable[[bytes], str],
        *,
        knobs_kind: str | None = None,
    ) -> Job:
        """A new job whose id and future derive from (seed, provider, kind, body, n)."""
        key, labels = self.labels(provider, kind, body)
        job = Job(
            provider=provider,
            kind=kind,
            body=body,
            key=key,
            labels=labels,
            knobs=self.knobs(provider, knobs_kind or kind),
            created=self.clock(),
            scale=self.scenario.time_scale,
            make_id=make_id,
            wall=self.wall(),
        )
        self.jobs[provider][job.id] = job
        heapq.heappush(self._ends[provider], job.created + job.total_s / job.scale)
        self.books.providers[provider].record_submit(key)
        return job

    def active(self, provider: str) -> int:
        """How many of `provider`'s jobs have not reached their drawn end (cancels aside)."""
        ends, now = self._ends[provider], self.clock()
        while ends and ends[0] <= now:
            heapq.heappop(ends)
        return len(ends)

    def drawn(self) -> dict[str, Any]:
        """Every job's drawn future, for benchmarks computing the ideal a batch allowed:
        `created` is the sandbox clock (monotonic seconds), `duration` virtual seconds and
        `wall_duration` the same divided by the time scale."""
        scale = self.scenario.time_scale
        return {
            "time_scale": scale,
            "providers": {
                name: [
                    {
                        "id": job.id,
                        "kind": job.kind,
                        "created": round(job.created, 6),
                        "duration": round(job.total_s, 6),
                        "wall_duration": round(job.total_s / scale, 6),
                        "outcome": job.outcome.value,
                        "results": job.n_results,
                    }
                    for job in jobs.values()
                ]
                for name, jobs in self.jobs.items()
            },
        }

    def labels(self, provider: str, kind: str, body: Any) -> tuple[str, tuple[object, ...]]:
        """(body key, seed labels) for the next occurrence of `body`: ids of non-job objects
        (Lobstr squids, tasks) derive from these too."""
        key = det.body_key(body)
        slot = (provider, kind, key)
        occurrence = self._occurrences.get(slot, 0) + 1
        self._occurrences[slot] = occurrence
        return key, (self.seed, provider, kind, key, occurrence)

    def job(self, provider: str, job_id: str) -> Job | None:
        return self.jobs[provider].get(job_id)


# -- responses -------------------------------------------------------------------------------


def json_response(
    content: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(content, status_code=status, headers=headers)


class DroppedResponse(Response):
    """Closes the connection without a single byte of response.

    Under uvicorn the ASGI `send` is a bound method of the request cycle, which holds the
    socket's transport: aborting it is what a crashed proxy does. In-process (ASGITransport)
    there is no socket, so the same error httpx raises for a dropped socket is raised.
    """

    def __init__(self) -> None:
        super().__init__(b"", status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_send = scope.get("sandbox.send")
        cycle = getattr(raw_send, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        cycle.disconnected = True  # type: ignore[union-attr]  # no 500 from uvicorn after us
        transport.abort()


async def read_json(request: Request) -> tuple[Any, str | None]:
    """The body as JSON, or (None, problem)."""
    raw = await request.body()
    if not raw:
        return None, "request body is empty"
    try:
        return json.loads(raw), None
    except ValueError:
        return None, "request body is not valid JSON"


async def submit_key(request: Request) -> str | None:
    """The books' key of a submit's body (sha256 of its canonical JSON), None if not JSON."""
    body, problem = await read_json(request)
    return None if problem else det.body_key(body)


def origin_of(request: Request) -> str:
    """scheme://host[:port] as the client addressed us: out-of-band URLs use it."""
    host = request.headers.get("host")
    if host:
        return f"{request.url.scheme}://{host}"
    return str(request.base_url).rstrip("/")


def int_param(value: str | None, default: int, *, minimum: int = 0) -> int | None:
    """A non-negative integer query parameter; None when malformed."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number >= minimum else None


# -- the per-provider request pipeline -------------------------------------------------------


class ProviderApi:
    """Base of each provider's routes: auth, error bodies, throttling, faults, books."""

    name: ClassVar[str]
    prefix: ClassVar[str] = ""  # mount path used in the books' path templates

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.knobs = sandbox.knobs(self.name)
        limit = self.knobs.rate_limit
        self.window = SlidingWindow(limit.requests, limit.per) if limit else None
        self._counter = 0  # requests that reached the fault stage (error bursts, drops)
        self._submits = 0  # of those, submits (error_burst.on: submits)
        self._paid = 0  # submits that created a job, against the `credits` knob
        self._group_windows: dict[str, SlidingWindow] = {}

    # -- provider-specific hooks ----------------------------------------------------------

    def api_key(self, headers: Headers) -> str | None:
        raise NotImplementedError

    def error(self, status: int, message: str, code: str | None = None, **extra: Any) -> Response:
        raise NotImplementedError

    def unauthorized(self) -> Response:
        return self.error(401, "Unauthorized")

    def throttled(self, retry_after: float, limit: RateLimit, remaining: int) -> Response:
        response = self.error(429, "Too many requests", "RATE_LIMITED")
        response.headers["Retry-After"] = retry_after_header(retry_after)
        return response

    def no_credits(self) -> Response:
        """The provider's answer to a submit the account cannot pay for (`credits` knob);
        each provider module answers in its own words."""
        return self.error(402, "Insufficient credits", "insufficient_credits")

    def server_error(self, status: int) -> Response:
        return self.error(status, "Service temporarily unavailable", "SERVICE_UNAVAILABLE")

    def busy(self, cap: int) -> Response:
        """The answer to a submit over the hidden in-flight cap: by default the provider's
        own 429 with a one-second Retry-After; providers with a documented concurrency
        error answer that instead."""
        return self.throttled(1.0, RateLimit(cap, 1.0), 0)

    def endpoint_limit(self, template: str) -> tuple[str, RateLimit] | None:
        """Per-path limits (Lobstr): (group, limit) for this template, when enabled."""
        return None

    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    # -- the pipeline ---------------------------------------------------------------------

    @property
    def books(self) -> ProviderBooks:
        return self.sandbox.books.providers[self.name]

    def route(self, method: str, template: str, handler: Handler, *, submit: bool = False) -> Route:
        label = f"{method} {self.prefix}{template}"
        sandbox = self.sandbox
        knobs = self.knobs
        burst = knobs.error_burst
        drop_rate = knobs.drop_connection_rate
        latency = knobs.latency
        keys = frozenset(knobs.keys) if knobs.keys is not None else None
        hidden_cap = knobs.hidden_in_flight if submit else None
        endpoint_limit = self.endpoint_limit(template)
        endpoint_window = (
            self.sandbox_window(endpoint_limit[0], endpoint_limit[1]) if endpoint_limit else None
        )

        def share(fraction: float, n: int) -> bool:
            """Seeded: does request `n` fall in the `fraction` of faults that come late?"""
            if fraction <= 0 or fraction >= 1:
                return fraction >= 1
            return det.rng(sandbox.seed, self.name, "after", n).random() < fraction

        async def endpoint(request: Request) -> Response:
            now = sandbox.clock()
            books = sandbox.books.providers[self.name]
            books.record(label, now)
            if endpoint_limit is not None and endpoint_window is not None:
                group, limit = endpoint_limit
                books.record_endpoint(group, limit, now)
                wait = endpoint_window.acquire(now)
                if wait is not None:
                    books.throttled += 1
                    books.endpoint_throttled[group] = books.endpoint_throttled.get(group, 0) + 1
                    return self.throttled(wait, limit, 0)
            if self.window is not None:
                wait = self.window.acquire(now)
                if wait is not None:
                    books.throttled += 1
                    assert knobs.rate_limit is not None
                    return self.throttled(wait, knobs.rate_limit, 0)
            key = self.api_key(request.headers)
            if not key or (keys is not None and key not in keys):
                return self.unauthorized()
            if hidden_cap is not None and sandbox.active(self.name) >= hidden_cap:
                books.busy += 1
                return self.busy(hidden_cap)
            n = self._counter
            self._counter += 1
            k = n  # the request's place in the burst cycle
            if burst is not None and burst.submits_only:
                k = self._submits if submit else -1
                self._submits += submit
            injected = burst is not None and k >= 0 and k % burst.every >= burst.every - burst.count
            late_error = injected and burst is not None and share(burst.after_accept, n)
            drop = bool(drop_rate) and det.rng(sandbox.seed, self.name, "drop", n).random() < (
                drop_rate
            )
            late_drop = knobs.drop_after_accept and request.method != "GET"
            body_key = await submit_key(request) if submit and (injected or drop) else None
            if injected and not late_error:
                assert burst is not None
                books.errors_injected += 1
                books.record_fault(body_key, created=False)
                return self.server_error(burst.status)
            if drop and not injected and not late_drop:
                books.dropped += 1
                books.record_fault(body_key, created=False)
                return DroppedResponse()
            if latency:
                await anyio.sleep(latency)
            if submit and knobs.credits is not None and self._paid >= knobs.credits:
                books.refused_credits += 1
                return self.no_credits()
            response = await handler(request)
            created = submit and response.status_code < 300
            self._paid += created
            if injected:  # after the handler: a submit created its job, then got the error
                assert burst is not None
                books.errors_injected += 1
                books.errors_after_accept += 1
                books.record_fault(body_key, created=created)
                return self.server_error(burst.status)
            if drop:
                books.dropped += 1
                books.dropped_after_accept += 1
                books.record_fault(body_key, created=created)
                return DroppedResponse()
            if self.window is not None and knobs.rate_limit is not None:
                self.decorate(response, knobs.rate_limit, now)
            return response

        return Route(f"{self.prefix}{template}", endpoint, methods=[method])

    def decorate(self, response: Response, limit: RateLimit, now: float) -> None:
        """Rate-limit headers on accepted answers, for providers that send them."""

    def sandbox_window(self, group: str, limit: RateLimit) -> SlidingWindow:
        """One shared window per endpoint group (several paths may share a group)."""
        if group not in self._group_windows:
            self._group_windows[group] = SlidingWindow(limit.requests, limit.per)
        return self._group_windows[group]


def default_clock() -> float:
    return time.monotonic()
