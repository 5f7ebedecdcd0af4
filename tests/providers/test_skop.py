from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.errors import ErrorKind, NotCancellableError
from runner.plan import JobSpec
from runner.providers import skop
from runner.providers.base import Reply
from runner.remote import RemoteRef, RemoteState
from runner.store.results import JobDir
from tests.providers.fakes import API_KEY, FakeHttp, router

JOB = "job_4fc79a89797e"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def job(fetch: dict[str, Any] | None = None, **parameters: Any) -> JobSpec:
    params: dict[str, Any] = {"website": "https://acme.example", "prompt": "Find annual reports"}
    if parameters:
        params["parameters"] = parameters
    return JobSpec(id="j1", provider="skop", type="scrape", params=params, fetch=fetch or {})


def status(raw: str, **kw: Any) -> dict[str, Any]:
    return {"job_id": JOB, "status": raw, "progress": None, "is_active": True, **kw}


def doc(name: str | None, url: str, **kw: Any) -> dict[str, Any]:
    return {
        "name": name,
        "url": url,
        "document_type": "pdf",
        "confidence_score": 0.9,
        "file_size_mb": 1.5,
        **kw,
    }


def results(documents: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    body = {
        "job_id": JOB,
        "status": "completed",
        "documents": documents,
        "total_documents_found": len(documents),
        "success_rate": 1.0,
        "cost": 0.36,
        "has_errors": False,
        "errors": [],
    }
    body.update(kw)
    return body


# -- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "state", "phase"),
    [
        (status("pending", is_active=False), RemoteState.QUEUED, None),
        (status("in_progress", current_agent="crawler"), RemoteState.RUNNING, "crawler"),
        (status("Extracting"), RemoteState.RUNNING, "extracting"),
        (status("extracting", is_active=False), RemoteState.UNKNOWN, "extracting"),
        (status("verifying", is_active=None), RemoteState.UNKNOWN, "verifying"),
        (status("completed", is_active=False), RemoteState.SUCCEEDED, None),
        (status("cancelled", is_active=False), RemoteState.CANCELLED, None),
    ],
)
def test_status_mapping_uses_is_active_for_undocumented_phases(
    body: dict[str, Any], state: RemoteState, phase: str | None
) -> None:
    parsed = skop.parse_status(body)
    assert (parsed.state, parsed.phase, parsed.raw) == (state, phase, body["status"])


def test_progress_is_a_percentage() -> None:
    assert skop.parse_status(status("in_progress", progress=45)).progress == 0.45
    assert skop.parse_status(status("in_progress", progress=140)).progress == 1.0
    assert skop.parse_status(status("in_progress")).progress is None


def test_failed_reason_and_completed_with_errors() -> None:
    errors = [
        {"error_type": "timeout", "error_message": "site too slow", "agent_name": "crawler"},
        {"error_type": "blocked", "error_message": "403"},
    ]
    failed = skop.parse_status(status("failed", is_active=False, errors=errors))
    assert (failed.state, failed.reason) == (
        RemoteState.FAILED,
        "timeout: site too slow (and 1 more)",
    )
    done = skop.parse_status(status("completed", is_active=False, has_errors=True))
    assert (done.state, done.partial) == (RemoteState.SUCCEEDED, True)


@pytest.mark.parametrize(
    ("document", "name"),
    [
        (doc("Annual Report 2023", "https://a.example/x.pdf"), "Annual Report 2023.pdf"),
        (doc("report.PDF", "https://a.example/x.pdf"), "report.PDF"),
        (doc(None, "https://a.example/files/Q3%20results.pdf"), "Q3 results.pdf"),
        (doc("  ", "https://a.example/files/", document_type=None), "document"),
        (doc("memo", "https://a.example/m", document_type="../x"), "memo"),
    ],
)
def test_document_names(document: dict[str, Any], name: str) -> None:
    assert skop.document_name(document) == name


def test_selection_filters_by_confidence_and_size() -> None:
    documents = [
        doc("a", "https://a.example/a.pdf"),
        doc("b", "https://a.example/b.pdf", confidence_score=0.2),
        doc("c", "https://a.example/c.pdf", file_size_mb=30),
        doc("d", ""),
    ]
    chosen = skop.select_documents(
        results(documents), job({"min_confidence": 0.5}, max_file_size_mb=20)
    )
    assert [d["name"] for d in chosen.wanted] == ["a"]
    assert chosen.notes == (
        "1 document(s) below min_confidence 0.5 not downloaded: b.pdf",
        "1 document(s) over max_file_size_mb 20 not downloaded: c.pdf",
        "1 document(s) without a URL: d.pdf",
    )


def reply(code: int, body: Any) -> Reply:
    return Reply(code, {}, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("code", "body", "kind"),
    [
        (400, {"error": "validation_error", "message": "prompt too short"}, ErrorKind.INVALID),
        (401, {"detail": "Invalid API key"}, ErrorKind.AUTH),
        (402, {"error": "insufficient_credits", "message": "Top up"}, ErrorKind.CREDITS),
        (429, {"error": "concurrency_limit_exceeded", "message": "3 jobs"}, ErrorKind.BUSY),
        (429, {"detail": "Too many requests"}, ErrorKind.RATE_LIMITED),
        (503, {"error": "service_unavailable"}, ErrorKind.BUSY),
        (404, {"detail": "Job not found or access denied"}, ErrorKind.NOT_FOUND),
        (500, {"detail": "Internal server error"}, ErrorKind.TRANSIENT),
    ],
)
def test_classify_error(code: int, body: Any, kind: ErrorKind) -> None:
    assert skop.classify_error(reply(code, body)).kind is kind


def test_classify_error_message_and_code() -> None:
    error = skop.classify_error(
        reply(400, {"error": "validation_error", "message": "prompt too short"})
    )
    assert (error.message, error.code) == ("prompt too short", "validation_error")


# -- the adapter --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_submit_posts_to_the_trailing_slash_path_with_bearer_auth() -> None:
    created = httpx.Response(201, json={"job_id": JOB, "status": "pending", "message": "ok"})
    http = FakeHttp(skop.ADAPTER, router({"POST /scrape/": created}))
    spec = job(max_file_size_mb=5)
    submitted = await skop.SkopAdapter().submit(http, spec)
    assert submitted.ref == RemoteRef(JOB)
    assert submitted.status is not None
    assert submitted.status.state is RemoteState.QUEUED
    (seen,) = http.seen
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert seen.json() == dict(spec.params)


@pytest.mark.anyio
async def test_fetch_writes_results_and_downloads_documents_safely(tmp_path: Path) -> None:
    documents = [
        doc("Annual Report", "https://files.example/a.pdf"),
        doc("Annual Report", "https://files.example/b.pdf"),
        doc("../../etc/passwd", "https://files.example/c.pdf"),
        doc("low", "https://files.example/low.pdf", confidence_score=0.1),
        doc("huge", "https://files.example/huge.pdf", file_size_mb=900),
        doc("gone", "https://files.example/gone.pdf"),
    ]
    routes = {
        f"GET /scrape/results/{JOB}": results(documents),
        "GET /a.pdf": httpx.Response(200, content=b"A"),
        "GET /b.pdf": httpx.Response(200, content=b"B"),
        "GET /c.pdf": httpx.Response(200, content=b"C"),
        "GET /gone.pdf": httpx.Response(404, text="Not Found"),
    }
    http = FakeHttp(skop.ADAPTER, router(routes))
    out = JobDir(tmp_path / "j1", "j1")
    spec = job({"min_confidence": 0.5})
    report = await skop.SkopAdapter().fetch(
        http, spec, RemoteRef(JOB), skop.parse_status(status("completed")), out
    )

    assert json.loads((out.path / "result.json").read_text())["documents"] == documents
    on_disk = {p.name: p.read_bytes() for p in out.files_dir.iterdir()}
    assert on_disk == {
        "Annual Report.pdf": b"A",
        "Annual Report-2.pdf": b"B",  # same name: numbered, never overwritten
        "_.._etc_passwd.pdf": b"C",  # no separators, no leading dot
    }
    third_party = [s for s in http.seen if s.url.host == "files.example"]
    assert all("authorization" not in s.headers for s in third_party)
    assert {d[1:] for d in http.downloads} == {(False, 100 * 1024 * 1024)}
    assert (report.files, report.partial) == (3, True)
    assert report.notes == (
        "1 document(s) below min_confidence 0.5 not downloaded: low.pdf",
        "1 document(s) over max_file_size_mb 100 not downloaded: huge.pdf",
        "document gone.pdf could not be downloaded: HTTP 404: Not Found",
    )
    assert report.outcome == {
        "cost_usd": 0.36,
        "documents_found": 6,
        "documents_skipped": {"low_confidence": 1, "too_large": 1},
    }


@pytest.mark.anyio
async def test_a_clean_run_with_only_filtered_documents_is_not_partial(tmp_path: Path) -> None:
    documents = [
        doc("a", "https://files.example/a.pdf"),
        doc("b", "https://f.example/b", confidence_score=0),
    ]
    routes = {
        f"GET /scrape/results/{JOB}": results(documents),
        "GET /a.pdf": httpx.Response(200, content=b"A"),
    }
    http = FakeHttp(skop.ADAPTER, router(routes))
    report = await skop.SkopAdapter().fetch(
        http, job({"min_confidence": 0.5}, max_file_size_mb=2), RemoteRef(JOB),
        skop.parse_status(status("completed")), JobDir(tmp_path / "j", "j"),
    )  # fmt: skip
    assert (report.files, report.partial) == (1, False)
    assert http.downloads == [("https://files.example/a.pdf", False, 2 * 1024 * 1024)]


@pytest.mark.anyio
async def test_skop_errors_and_success_rate_make_the_job_partial(tmp_path: Path) -> None:
    body = results(
        [],
        has_errors=True,
        success_rate=0.5,
        errors=[{"error_type": "blocked", "error_message": "robots.txt"}],
    )
    http = FakeHttp(skop.ADAPTER, router({f"GET /scrape/results/{JOB}": body}))
    report = await skop.SkopAdapter().fetch(
        http, job({"documents": False}), RemoteRef(JOB),
        skop.parse_status(status("completed")), JobDir(tmp_path / "j", "j"),
    )  # fmt: skip
    assert report.partial is True
    assert report.notes == (
        "Skop reported errors: blocked: robots.txt",
        "Skop's success rate was 0.5",
    )


@pytest.mark.anyio
async def test_cancel_and_reconcile_send_nothing() -> None:
    http = FakeHttp(skop.ADAPTER, router({}))
    adapter = skop.SkopAdapter()
    with pytest.raises(NotCancellableError) as info:  # never a silent "cancelled"
        await adapter.cancel(http, job(), RemoteRef(JOB))
    assert str(info.value) == "provider has no cancel: the remote job runs on"
    assert await adapter.reconcile(http, job(), 0.0) is None
    assert http.seen == []
