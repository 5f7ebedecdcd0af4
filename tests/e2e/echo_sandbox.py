"""Echo's API for the sandbox, mounted at /echo (its `prefix`): see tests/e2e/echo_provider.py."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from runner.sandbox import determinism as det
from runner.sandbox.core import Phase, ProviderApi, json_response, read_json

_STATES = {
    Phase.QUEUED: "queued",
    Phase.RUNNING: "running",
    Phase.SUCCEEDED: "done",
    Phase.PARTIAL: "done",
    Phase.FAILED: "failed",
    Phase.CANCELLED: "failed",
    Phase.EXPIRED: "failed",
}


class EchoApi(ProviderApi):
    name = "echo"
    prefix = "/echo"

    def api_key(self, headers: Headers) -> str | None:
        return headers.get("x-echo-key") or None

    def error(self, status: int, message: str, code: str | None = None, **extra: Any) -> Response:
        return json_response({"error": message}, status)

    def routes(self) -> list[BaseRoute]:
        return [
            self.route("POST", "/jobs", self.submit, submit=True),
            self.route("GET", "/jobs/{job_id}", self.status),
            self.route("GET", "/jobs/{job_id}/result", self.result),
        ]

    async def submit(self, request: Request) -> Response:
        body, problem = await read_json(request)
        if problem or not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return self.error(422, problem or "text is required")
        job = self.sandbox.create_job(self.name, "run", body, det.uuid_from)
        return json_response({"id": job.id, "state": "queued"}, 201)

    async def status(self, request: Request) -> Response:
        job = self.sandbox.job(self.name, request.path_params["job_id"])
        if job is None:
            return self.error(404, "no such job")
        phase = job.view(self.sandbox.clock()).phase
        return json_response({"id": job.id, "state": _STATES[phase]})

    async def result(self, request: Request) -> Response:
        job = self.sandbox.job(self.name, request.path_params["job_id"])
        if job is None or not job.view(self.sandbox.clock()).phase.terminal:
            return self.error(404, "no result yet")
        return json_response({"echo": job.body["text"]})
