"""Build the sandbox ASGI app: every provider's routes, the books and the out-of-band files."""

from __future__ import annotations

import importlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from runner.errors import RunnerError
from runner.providers.base import ProviderInfo
from runner.providers.registry import PROVIDERS
from runner.sandbox.core import Clock, ProviderApi, Sandbox, default_clock, json_response
from runner.sandbox.scenario import Scenario


def api_class(info: ProviderInfo) -> type[ProviderApi]:
    """The sandbox API a provider names in `info.sandbox_api` ("module:Class"), imported."""
    module, _, attr = info.sandbox_api.partition(":")
    found = getattr(importlib.import_module(module), attr, None) if module and attr else None
    if not (isinstance(found, type) and issubclass(found, ProviderApi)) or (
        found.name != info.name
    ):
        raise RunnerError(
            f"provider {info.name}: sandbox_api {info.sandbox_api!r} is not a ProviderApi "
            f"subclass named {info.name!r}"
        )
    return found


def provider_apis() -> tuple[type[ProviderApi], ...]:
    """The sandbox API of every registered provider, in registry order."""
    return tuple(api_class(info) for info in PROVIDERS.values())


class SandboxApp(Starlette):
    """Starlette that keeps the server's own `send` in the scope (see DroppedResponse)."""

    sandbox: Sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["sandbox.send"] = send
        await super().__call__(scope, receive, send)


def create_app(
    *, seed: int = 0, scenario: Scenario | None = None, clock: Clock | None = None
) -> Starlette:
    """The sandbox app. `clock` (monotonic seconds) is for tests that drive time by hand."""
    sandbox = Sandbox(seed=seed, scenario=scenario or Scenario(), clock=clock or default_clock)

    async def stats(request: Request) -> Response:
        return json_response(sandbox.books.snapshot())

    async def jobs(request: Request) -> Response:
        return json_response(sandbox.drawn())

    async def reset(request: Request) -> Response:
        sandbox.books.reset()
        return json_response({"reset": True})

    routes: list[BaseRoute] = [
        Route("/_sandbox/stats", stats, methods=["GET"]),
        Route("/_sandbox/jobs", jobs, methods=["GET"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
        sandbox.files.route(),
    ]
    for api in provider_apis():
        routes.extend(api(sandbox).routes())
    app = SandboxApp(routes=routes)
    app.sandbox = sandbox
    return app
