"""Echo: a sixth provider as a user would add one (the README's "Adding a provider").

`POST /jobs {text}` → `{id, state}`; `GET /jobs/{id}` → `{id, state}` (queued, running,
done, failed); `GET /jobs/{id}/result` → `{echo}`. Auth: `x-echo-key`. No cancel, no list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from runner.errors import ErrorKind, ProviderResponseError
from runner.plan import JobSpec, Limits, PollPolicy, Rate
from runner.providers.base import ApiError, ProviderHttp, ProviderInfo, Reply, Request, Submitted
from runner.remote import FetchReport, RemoteRef, RemoteState, ResultSink, Status

INFO = ProviderInfo(
    name="echo",
    title="Echo",
    default_base_url="https://api.echo.invalid/echo",
    api_key_env="ECHO_API_KEY",
    job_types=("run",),
    default_limits=Limits(requests=Rate(50, 1.0), in_flight=4),
    default_poll=PollPolicy(1.0, 5.0, 1.5),
    cancellable=(),
    sandbox_api="tests.e2e.echo_sandbox:EchoApi",
    schema_dir=Path(__file__).parent,  # echo.run.schema.json lives beside this module
    typical_duration=10.0,
    result_requests=lambda job: 1,  # GET /jobs/{id}/result
    estimate_note="echo: results are one request",
)

_STATES = {
    "queued": RemoteState.QUEUED,
    "running": RemoteState.RUNNING,
    "done": RemoteState.SUCCEEDED,
    "failed": RemoteState.FAILED,
}


def _body(reply: Reply) -> dict[str, Any]:
    try:
        body = reply.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ProviderResponseError("echo: the reply is not a JSON object", reply.excerpt())
    return body


def _path(ref: RemoteRef, tail: str = "") -> str:
    return f"/jobs/{quote(ref.id, safe='')}{tail}"


class EchoAdapter:
    info = INFO

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {"x-echo-key": api_key}

    def classify_error(self, reply: Reply) -> ApiError:
        kinds = {401: ErrorKind.AUTH, 404: ErrorKind.NOT_FOUND, 422: ErrorKind.INVALID}
        kind = kinds.get(reply.status_code)
        if kind is None:
            kind = ErrorKind.TRANSIENT if reply.status_code >= 500 else ErrorKind.OTHER
        return ApiError(kind, reply.excerpt() or f"HTTP {reply.status_code}")

    async def submit(self, http: ProviderHttp, job: JobSpec) -> Submitted:
        reply = await http.send(Request("POST", "/jobs", "submit", json=dict(job.params)))
        return Submitted(RemoteRef(str(_body(reply)["id"])))

    async def poll(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> Status:
        body = _body(await http.send(Request("GET", _path(ref), "status")))
        raw = str(body.get("state"))
        return Status(_STATES.get(raw, RemoteState.UNKNOWN), raw=raw, payload=body)

    async def fetch(
        self, http: ProviderHttp, job: JobSpec, ref: RemoteRef, status: Status, sink: ResultSink
    ) -> FetchReport:
        sink.write_result(_body(await http.send(Request("GET", _path(ref, "/result"), "results"))))
        return FetchReport(items=1)

    async def cancel(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> None:
        INFO.refuse_cancel(job)

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        return None


ADAPTER = EchoAdapter()
