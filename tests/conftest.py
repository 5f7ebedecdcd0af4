"""Shared fixtures: a real sandbox served by uvicorn on 127.0.0.1 (ephemeral port).

`sandbox` gives a running sandbox (seed 0, default scenario); mark a test with
`@pytest.mark.sandbox(seed=3, scenario={...})` to change either. `make_sandbox(...)` starts
more (each with its own seed/scenario); all are shut down after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from typing import Any

import pytest

from runner.sandbox.app import create_app
from runner.sandbox.scenario import Scenario
from runner.sandbox.server import RunningSandbox, serve_in_thread

MakeSandbox = Callable[..., RunningSandbox]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sandbox(seed=0, scenario=None): configure the `sandbox` fixture"
    )


def _scenario(value: Scenario | Mapping[str, Any] | None) -> Scenario | None:
    if value is None or isinstance(value, Scenario):
        return value
    return Scenario.from_dict(value)


@pytest.fixture
def make_sandbox() -> Iterator[MakeSandbox]:
    with ExitStack() as stack:

        def make(
            *, seed: int = 0, scenario: Scenario | Mapping[str, Any] | None = None
        ) -> RunningSandbox:
            app = create_app(seed=seed, scenario=_scenario(scenario))
            return stack.enter_context(serve_in_thread(app))

        yield make


@pytest.fixture
def sandbox(request: pytest.FixtureRequest, make_sandbox: MakeSandbox) -> RunningSandbox:
    marker = request.node.get_closest_marker("sandbox")
    kwargs = dict(marker.kwargs) if marker else {}
    return make_sandbox(**kwargs)
