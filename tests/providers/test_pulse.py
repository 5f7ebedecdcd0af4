"""Pulse adapter: pure builders and parsers, sync answers, and the large-result download."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.errors import (
    ErrorKind,
    JobFailedError,
    NotCancellableError,
    ProviderCallError,
    ProviderResponseError,
)
from runner.http.client import HttpxTransport, ProviderClient
from runner.http.limits import Gate
from runner.plan import JobSpec, Limits
from runner.providers import pulse
from runner.providers.base import Reply
from runner.remote import RemoteRef, RemoteState
from runner.store.results import JobDir

JOB = JobSpec("inv-1", "pulse", "extract", {"file_url": "https://files.example/1.pdf"})


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, headers or {}, json.dumps(body).encode())


def test_submit_asks_for_async_and_sends_the_params() -> None:
    request = pulse.build_submit(JOB)
    assert (request.method, request.path, request.endpoint) == ("POST", "/extract", "submit")
    assert request.json == {"file_url": "https://files.example/1.pdf", "async": True}
    assert pulse.auth_headers("k") == {"x-api-key": "k"}


def test_async_submit_reply_gives_job_id_and_pending() -> None:
    submitted = pulse.parse_submit(reply(202, {"job_id": "abc", "status": "pending"}))
    assert submitted.ref == RemoteRef("abc")
    assert submitted.status is not None
    assert submitted.status.state is RemoteState.QUEUED


def test_tables_id_is_an_id_too() -> None:
    assert pulse.parse_submit(reply(200, {"tables_id": "t1"})).ref == RemoteRef("t1")


def test_a_reply_without_an_id_is_a_synchronous_answer() -> None:
    body = {"markdown": "# Invoice", "extraction_id": "e1"}
    submitted = pulse.parse_submit(reply(200, body))
    assert submitted.ref == RemoteRef("sync", {"sync": True})
    assert submitted.status is not None
    assert submitted.status.state is RemoteState.SUCCEEDED
    assert submitted.status.payload == {"status": "completed", "result": body}


def test_job_id_null_falls_back_to_tables_id() -> None:
    assert pulse.parse_submit(reply(200, {"job_id": None, "tables_id": "t1"})).ref.id == "t1"


@pytest.mark.parametrize("raw", ["pending", "processing"])
def test_an_async_envelope_without_an_id_is_malformed_not_a_result(raw: str) -> None:
    with pytest.raises(ProviderResponseError) as info:
        pulse.parse_submit(reply(202, {"status": raw, "message": "Extract job submitted"}))
    assert str(info.value) == (
        f'pulse: the submit reply has no job_id: {{"status": "{raw}", '
        '"message": "Extract job submitted"}'
    )


def test_a_terminal_async_reply_is_used_as_is() -> None:
    body = {"job_id": "abc", "status": "completed", "result": {"markdown": "x"}}
    submitted = pulse.parse_submit(reply(200, body))
    assert submitted.status is not None
    assert submitted.status.state is RemoteState.SUCCEEDED


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("pending", RemoteState.QUEUED),
        ("Processing", RemoteState.RUNNING),
        ("canceled", RemoteState.CANCELLED),
        ("CANCELLED", RemoteState.CANCELLED),
        (" failed ", RemoteState.FAILED),
        ("expired", RemoteState.EXPIRED),
        ("archived", RemoteState.UNKNOWN),
    ],
)
def test_statuses_compare_case_insensitively(raw: str, state: RemoteState) -> None:
    assert pulse.parse_status(reply(200, {"job_id": "a", "status": raw})).state is state


def test_expired_result_is_not_ready() -> None:
    body = {"job_id": "a", "status": "expired", "result": {"expired": True}}
    assert pulse.parse_status(reply(200, body)).results_ready is False


def test_failed_job_carries_its_error() -> None:
    body = {"job_id": "a", "status": "failed", "error": "unreadable PDF"}
    assert pulse.parse_status(reply(200, body)).reason == "unreadable PDF"


def test_large_result_pointer_without_url_is_malformed() -> None:
    body = {"job_id": "a", "status": "completed", "result": {"is_url": True}}
    with pytest.raises(ProviderResponseError, match="a large result has no url"):
        pulse.parse_status(reply(200, body))


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "message"),
    [
        (401, {"error": {"code": "AUTH_001", "message": "bad key"}}, {}, ErrorKind.AUTH, "bad key"),
        (403, {"error": {"code": "AUTH_004", "message": "no"}}, {}, ErrorKind.AUTH, "no"),
        (402, {"error": "plan limit"}, {}, ErrorKind.CREDITS, "plan limit"),
        (400, {"error": {"code": "BILLING_002", "message": "no credits"}}, {}, ErrorKind.CREDITS,
         "no credits"),
        (429, {"detail": "slow"}, {}, ErrorKind.RATE_LIMITED, "slow"),
        (503, {"detail": "busy"}, {"retry-after": "5"}, ErrorKind.BUSY, "busy"),
        (503, {"detail": "busy"}, {}, ErrorKind.TRANSIENT, "busy"),
        (500, {"error": {"code": "GENERAL_001", "message": "x"}}, {}, ErrorKind.TRANSIENT, "x"),
        (410, {"detail": "gone"}, {}, ErrorKind.GONE, "gone"),
        (413, {"error": "too large"}, {}, ErrorKind.INVALID, "too large"),
        (404, {"detail": "Not Found"}, {}, ErrorKind.NOT_FOUND, "Not Found"),
    ],
)  # fmt: skip
def test_error_envelopes_and_classification(
    status: int, body: Any, headers: dict[str, str], kind: ErrorKind, message: str
) -> None:
    error = pulse.classify_error(reply(status, body, headers))
    assert (error.kind, error.message) == (kind, message)


def client(handler: Any) -> ProviderClient:
    return ProviderClient(
        provider="pulse",
        base_url="https://api.pulse.test",
        api_key="pk",
        adapter=pulse.ADAPTER,
        gate=Gate("pulse", Limits(), pool_size=1),
        transport=HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler))),
    )


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_large_result_is_downloaded_at_once_with_the_key_on_the_api_host(
    tmp_path: Path,
) -> None:
    seen: list[httpx.Request] = []
    big = {"markdown": "# " + "x" * 1000}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/job/abc":
            url = "https://api.pulse.test/large_results/abc"
            return httpx.Response(
                200,
                json={
                    "job_id": "abc",
                    "status": "completed",
                    "result": {"is_url": True, "url": url},
                },
            )
        return httpx.Response(200, json=big)

    http = client(handler)
    status = await pulse.ADAPTER.poll(http, JOB, RemoteRef("abc"))
    sink = JobDir(tmp_path / "inv-1", "inv-1")
    report = await pulse.ADAPTER.fetch(http, JOB, RemoteRef("abc"), status, sink)
    assert report.files == 1
    assert report.notes == ("large result downloaded to files/result.json",)
    assert json.loads((tmp_path / "inv-1/files/result.json").read_text()) == big
    assert not (tmp_path / "inv-1/result.json").exists()
    assert seen[1].headers["x-api-key"] == "pk"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_presigned_url_elsewhere_gets_no_key_and_410_is_gone(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(410, json={"detail": "gone"})

    result = {"is_url": True, "url": "https://bucket.s3.test/abc?sig=1"}
    status = pulse.parse_status(
        reply(200, {"job_id": "abc", "status": "completed", "result": result})
    )
    sink = JobDir(tmp_path / "inv-1", "inv-1")
    with pytest.raises(ProviderCallError) as info:
        await pulse.ADAPTER.fetch(client(handler), JOB, RemoteRef("abc"), status, sink)
    assert info.value.kind is ErrorKind.GONE
    assert "x-api-key" not in seen[0].headers


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cancel_deletes_the_job_and_refuses_a_synchronous_one() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, json={"job_id": "abc", "message": "Job cancelled successfully"})

    http = client(handler)
    await pulse.ADAPTER.cancel(http, JOB, RemoteRef("abc"))
    with pytest.raises(NotCancellableError) as info:  # nothing runs remotely: not "cancelled"
        await pulse.ADAPTER.cancel(http, JOB, RemoteRef("sync", {"sync": True}))
    assert str(info.value) == "Pulse answered this job synchronously: no remote job to cancel"
    assert seen == ["DELETE /job/abc"]


def test_an_unknown_job_type_is_refused_before_sending() -> None:
    with pytest.raises(JobFailedError) as info:
        pulse.build_submit(JobSpec("s", "pulse", "ocr", {"extraction_id": "e"}))
    assert str(info.value) == "pulse: unknown job type 'ocr'"


@pytest.mark.parametrize("kind", ["schema", "split", "tables"])
def test_every_job_type_posts_to_its_own_path_asynchronously(kind: str) -> None:
    request = pulse.build_submit(JobSpec("s", "pulse", kind, {"extraction_id": "e"}))
    assert (request.method, request.path) == ("POST", f"/{kind}")
    assert request.json == {"extraction_id": "e", "async": True}


@pytest.mark.parametrize(
    ("result", "outcome"),
    [
        ({"schema_output": {"a": 1}, "plan-info": {"pages_used": 3}}, {"pages": 3}),
        ({"split_id": "sp-1", "split_output": {}, "plan-info": {"pages_used": 2}},
         {"pages": 2, "split_id": "sp-1"}),
        ({"tables_output": [{"page": 1}, {"page": 2}], "plan-info": {"pages_used": 1}},
         {"pages": 1, "tables": 2}),
        ({"extraction_id": "ex-1", "markdown": "m", "page_count": 4},
         {"pages": 4, "extraction_id": "ex-1"}),
    ],
)  # fmt: skip
def test_the_outcome_keeps_pages_and_the_ids_later_jobs_chain_on(
    result: dict[str, Any], outcome: dict[str, Any]
) -> None:
    assert pulse.result_outcome(result) == outcome


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("refusal", [404, 405])
async def test_cancel_falls_back_to_the_legacy_path(refusal: int) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.method == "DELETE":
            return httpx.Response(refusal, json={"detail": "Not Found"})
        return httpx.Response(200, json={"message": "cancelled"})

    await pulse.ADAPTER.cancel(client(handler), JOB, RemoteRef("abc"))
    assert seen == ["DELETE /job/abc", "POST /cancel/abc"]
