"""Spidra adapter: pure builders and parsers, and one submit→poll→fetch over MockTransport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.errors import ErrorKind, JobFailedError, ProviderResponseError
from runner.http.client import HttpxTransport, ProviderClient
from runner.http.limits import Gate
from runner.plan import JobSpec, Limits
from runner.providers import spidra
from runner.providers.base import Reply
from runner.remote import FetchReport, RemoteRef, RemoteState
from runner.store.results import JobDir

JOB = JobSpec("acme", "spidra", "scrape", {"urls": [{"url": "https://acme.example"}]})


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, headers or {}, json.dumps(body).encode())


def test_submit_request_is_the_params_as_json_to_scrape() -> None:
    request = spidra.build_submit(JOB)
    assert (request.method, request.path, request.endpoint) == ("POST", "/scrape", "submit")
    assert request.json == {"urls": [{"url": "https://acme.example"}]}
    assert spidra.auth_headers("k1") == {"Authorization": "Bearer k1"}


def test_submit_reply_gives_the_job_id_and_queued() -> None:
    submitted = spidra.parse_submit(reply(202, {"status": "queued", "jobId": "j-1"}))
    assert submitted.ref == RemoteRef("j-1")
    assert submitted.status is not None
    assert submitted.status.state is RemoteState.QUEUED


def test_submit_reply_without_job_id_is_malformed_with_an_excerpt() -> None:
    with pytest.raises(ProviderResponseError) as info:
        spidra.parse_submit(reply(200, {"status": "queued"}))
    assert str(info.value) == 'spidra: the submit reply has no jobId: {"status": "queued"}'


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("waiting", RemoteState.QUEUED),
        ("DELAYED", RemoteState.QUEUED),
        ("Active", RemoteState.RUNNING),
        ("running", RemoteState.RUNNING),
        ("failed", RemoteState.FAILED),
        ("cancelled", RemoteState.CANCELLED),
        ("canceled", RemoteState.CANCELLED),
        ("thinking", RemoteState.UNKNOWN),
    ],
)
def test_statuses_compare_case_insensitively(raw: str, state: RemoteState) -> None:
    status = spidra.parse_status(reply(200, {"status": raw, "progress": None, "error": None}))
    assert status.state is state
    assert status.raw == raw
    assert not status.state.terminal or state in (RemoteState.FAILED, RemoteState.CANCELLED)


def test_running_status_carries_progress_and_phase() -> None:
    body = {"status": "active", "progress": {"message": "Processing", "progress": 0.4}}
    status = spidra.parse_status(reply(200, body))
    assert (status.progress, status.phase) == (0.4, "Processing")


def test_failed_status_carries_the_error_as_reason() -> None:
    body = {"status": "failed", "error": "net::ERR_NAME_NOT_RESOLVED"}
    assert spidra.parse_status(reply(200, body)).reason == "net::ERR_NAME_NOT_RESOLVED"


@pytest.mark.parametrize(
    ("result", "partial"),
    [
        ({"content": "x", "data": [{"success": True}]}, False),
        ({"content": "x", "data": [{"success": True}, {"success": False}]}, True),
        ({"content": "x", "ai_extraction_failed": True, "data": []}, True),
    ],
)
def test_completed_is_partial_when_any_url_or_the_ai_failed(
    result: dict[str, Any], partial: bool
) -> None:
    status = spidra.parse_status(reply(200, {"status": "completed", "result": result}))
    assert status.state is RemoteState.SUCCEEDED
    assert status.partial is partial


def test_completed_without_result_is_malformed() -> None:
    with pytest.raises(ProviderResponseError, match="a completed scrape has no result object"):
        spidra.parse_status(reply(200, {"status": "completed", "result": None}))


def test_non_json_status_is_malformed_with_an_excerpt() -> None:
    with pytest.raises(ProviderResponseError) as info:
        spidra.parse_status(Reply(200, {}, b"<html>oops</html>"))
    assert str(info.value) == "spidra: the status reply is not JSON: <html>oops</html>"


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        (401, {"message": "Invalid or missing API key"}, {}, ErrorKind.AUTH),
        (402, {"message": "Payment overdue", "code": "PAYMENT_OVERDUE"}, {}, ErrorKind.CREDITS),
        (403, {"message": "Monthly credit limit reached"}, {}, ErrorKind.CREDITS),
        (403, {"message": "Invalid API key"}, {}, ErrorKind.AUTH),
        (403, {"message": "Not authorized to access this job"}, {}, ErrorKind.INVALID),
        (429, {"message": "slow down"}, {"retry-after": "3"}, ErrorKind.RATE_LIMITED),
        (429, {"message": "pending", "code": "TOO_MANY_PENDING_JOBS"}, {}, ErrorKind.BUSY),
        (503, {"message": "busy", "code": "SERVICE_BUSY", "retry_after": 60}, {}, ErrorKind.BUSY),
        (500, {"message": "queue", "code": "QUEUE_UNAVAILABLE"}, {}, ErrorKind.BUSY),
        (503, {"message": "down"}, {}, ErrorKind.TRANSIENT),
        (500, {"message": "boom"}, {}, ErrorKind.TRANSIENT),
        (404, {"message": "not found"}, {}, ErrorKind.NOT_FOUND),
        (422, {"message": "bad", "errors": ["urls required"]}, {}, ErrorKind.INVALID),
    ],
)
def test_error_classification(
    status: int, body: dict[str, Any], headers: dict[str, str], kind: ErrorKind
) -> None:
    error = spidra.classify_error(reply(status, {"status": "error", **body}, headers))
    assert error.kind is kind
    assert error.message == body["message"]


def test_a_validation_error_without_a_message_reads_its_errors_list() -> None:
    body = {"status": "error", "code": "VALIDATION_ERROR", "errors": ["urls required", "bad x"]}
    error = spidra.classify_error(reply(422, body))
    assert (error.kind, error.message) == (ErrorKind.INVALID, "urls required; bad x")


def test_busy_error_keeps_the_body_retry_after() -> None:
    body = {"status": "error", "message": "busy", "code": "SERVICE_BUSY", "retry_after": 60}
    error = spidra.classify_error(reply(503, body))
    assert (error.code, error.retry_after) == ("SERVICE_BUSY", 60.0)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_adapter_submits_polls_and_writes_the_inline_result(tmp_path: Path) -> None:
    result = {"content": {"plans": []}, "data": [{"success": True}], "stats": {"totalTokens": 9}}
    answers = {
        ("POST", "/api/scrape"): {"status": "queued", "jobId": "j-1"},
        ("GET", "/api/scrape/j-1"): {"status": "completed", "result": result},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer key"
        return httpx.Response(200, json=answers[(request.method, request.url.path)])

    http = ProviderClient(
        provider="spidra",
        base_url="https://api.spidra.test/api",
        api_key="key",
        adapter=spidra.ADAPTER,
        gate=Gate("spidra", Limits(), pool_size=1),
        transport=HttpxTransport(httpx.AsyncClient(transport=httpx.MockTransport(handler))),
    )
    adapter = spidra.ADAPTER
    submitted = await adapter.submit(http, JOB)
    status = await adapter.poll(http, JOB, submitted.ref)
    sink = JobDir(tmp_path / "acme", "acme")
    report = await adapter.fetch(http, JOB, submitted.ref, status, sink)
    assert report == FetchReport(items=1, outcome={"tokens": 9})
    assert json.loads((tmp_path / "acme" / "result.json").read_text()) == result
    assert await adapter.reconcile(http, JOB, 0.0) is None


def test_an_unknown_job_type_is_refused_before_sending() -> None:
    other = JobSpec("c", "spidra", "search", {"query": "x"})
    with pytest.raises(JobFailedError) as info:
        spidra.build_submit(other)
    assert str(info.value) == "spidra: unknown job type 'search'"
