"""Build the sandbox ASGI app: every provider's routes, the books and the out-of-band files."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from runner.sandbox.bulkgrid import BulkgridApi
from runner.sandbox.core import Clock, ProviderApi, Sandbox, default_clock, json_response
from runner.sandbox.lobstr import LobstrApi
from runner.sandbox.pulse import PulseApi
from runner.sandbox.scenario import Scenario
from runner.sandbox.skop import SkopApi
from runner.sandbox.spidra import SpidraApi

PROVIDER_APIS: tuple[type[ProviderApi], ...] = (
    BulkgridApi,
    LobstrApi,
    SpidraApi,
    SkopApi,
    PulseApi,
)


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

    async def reset(request: Request) -> Response:
        sandbox.books.reset()
        return json_response({"reset": True})

    routes: list[BaseRoute] = [
        Route("/_sandbox/stats", stats, methods=["GET"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
        sandbox.files.route(),
    ]
    for api in PROVIDER_APIS:
        routes.extend(api(sandbox).routes())
    app = SandboxApp(routes=routes)
    app.sandbox = sandbox
    return app
