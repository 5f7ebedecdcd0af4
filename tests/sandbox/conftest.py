"""Fixtures for the sandbox's own tests: a hand-driven clock and in-process clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest

from runner.sandbox.app import create_app
from runner.sandbox.scenario import Scenario
from runner.sandbox.server import sandbox_base_urls

AUTH = {
    "bulkgrid": {"x-api-key": "bg_live_test"},
    "lobstr": {"authorization": "Token lobstr-test"},
    "spidra": {"authorization": "Bearer spd_test"},
    "skop": {"x-api-key": "sk-test"},
    "pulse": {"x-api-key": "pulse-test"},
}
ORIGIN = "http://sandbox.test"


class FakeClock:
    """Monotonic seconds that only move when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class InProcess:
    """One app reached through httpx.ASGITransport, with a client per provider."""

    def __init__(self, app: Any, clock: FakeClock) -> None:
        self.app = app
        self.clock = clock
        self.transport = httpx.ASGITransport(app=app)
        self.urls = sandbox_base_urls(ORIGIN)

    async def request(
        self, provider: str, method: str, path: str, *, auth: bool = True, **kwargs: Any
    ) -> httpx.Response:
        headers = {**(AUTH[provider] if auth else {}), **kwargs.pop("headers", {})}
        async with httpx.AsyncClient(transport=self.transport) as client:
            url = path if path.startswith("http") else self.urls[provider] + path
            return await client.request(method, url, headers=headers, **kwargs)

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(transport=self.transport) as client:
            return (await client.get(ORIGIN + "/_sandbox/stats")).json()  # type: ignore[no-any-return]


MakeInProcess = Callable[..., InProcess]


@pytest.fixture
def make_inprocess() -> Iterator[MakeInProcess]:
    def make(*, seed: int = 0, scenario: Mapping[str, Any] | Scenario | None = None) -> InProcess:
        if scenario is not None and not isinstance(scenario, Scenario):
            scenario = Scenario.from_dict(scenario)
        clock = FakeClock()
        return InProcess(create_app(seed=seed, scenario=scenario, clock=clock), clock)

    return make


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
