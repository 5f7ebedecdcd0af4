"""What `runner report` draws that transitions do not say, written to the log: limits and
the estimate when a run starts (`provider.limits`, `batch.estimate`), then once a second
each provider's requests, 429s and jobs in flight (`provider.load`, when something moved)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import anyio

from runner.errors import StoreError
from runner.estimate import estimate_plan
from runner.http.limits import Gate
from runner.plan import Plan, Rate
from runner.store.log import BatchLog

SAMPLE_SECONDS = 1.0


def _rate(rate: Rate) -> dict[str, float]:
    return {"rate": rate.rate, "per": rate.per, "burst": rate.burst}


def log_plan(log: BatchLog, plan: Plan) -> None:
    """`provider.limits` for every provider with jobs, then `batch.estimate`."""
    used = {job.provider for job in plan.jobs}
    for name, settings in plan.providers.items():
        if name not in used:
            continue
        limits = settings.limits
        log.provider(name).info(
            "provider.limits",
            requests=_rate(limits.requests) if limits.requests else None,
            endpoints={key: _rate(rate) for key, rate in limits.endpoints.items()},
            in_flight=limits.in_flight,
        )
    estimate = estimate_plan(plan)
    log.logger.info(
        "batch.estimate",
        expected_seconds=round(estimate.expected_seconds, 3),
        limits_only_seconds=round(estimate.floor_seconds, 3),
        providers={
            p.provider: {
                "expected_seconds": round(p.expected_seconds, 3),
                "bound": p.bound,
                "requests_expected": p.requests_expected,
            }
            for p in estimate.providers
        },
    )


class LoadSampler:
    """Samples every Gate each `every` seconds while the engine runs (a `drive` watcher);
    a last sample when it is cancelled, so the totals at the end are in the log."""

    def __init__(self, log: BatchLog, gates: Mapping[str, Gate], every: float = SAMPLE_SECONDS):
        self._log = log
        self._gates = dict(gates)
        self._every = every
        self._last: dict[str, tuple[Any, ...]] = {}

    def sample(self) -> None:
        for name, gate in self._gates.items():
            rate = gate.requests.aimd.rate(gate.clock.now()) if gate.requests else None
            now = (gate.sent, gate.throttles, gate.jobs_in_flight, gate.in_flight_cap)
            if self._last.get(name) == now:
                continue
            self._last[name] = now
            self._log.provider(name).debug(
                "provider.load",
                sent=gate.sent,
                throttled=gate.throttles,
                in_flight=gate.jobs_in_flight,
                cap=gate.in_flight_cap,
                paced=None if rate is None else round(rate, 4),
            )

    async def __call__(self, _engine: object = None) -> None:
        try:
            while True:
                await anyio.sleep(self._every)
                self.sample()
        finally:
            with contextlib.suppress(StoreError):  # a full disk was reported once already
                self.sample()


Watcher = Callable[[Any], Coroutine[Any, Any, Any]]


def together(*watchers: Watcher) -> Watcher:
    """One `drive` watcher that runs several side by side."""

    async def watch(engine: Any) -> None:
        async with anyio.create_task_group() as tg:
            for watcher in watchers:
                tg.start_soon(watcher, engine)

    return watch
