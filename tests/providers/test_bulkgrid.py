from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.errors import ErrorKind, NotSubmittedError, ProviderCallError, ProviderResponseError
from runner.plan import JobSpec
from runner.providers import bulkgrid
from runner.providers.base import Reply
from runner.remote import RemoteRef, RemoteState, Status
from runner.store.results import JobDir
from tests.providers.fakes import API_KEY, FakeHttp, router

RUN = "6f7d3ee0-8d8e-46db-9191-9d6a3df9cb31"
RUN_PATH = f"/api/v1/runs/{RUN}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def job(type_: str = "crawl", **kw: Any) -> JobSpec:
    params = kw.pop("params", None) or (
        {"url": "https://a.example"} if type_ in {"deep_crawl", "map"} else
        {"urls": ["https://a.example", "https://b.example"]}
    )  # fmt: skip
    return JobSpec(id="j1", provider="bulkgrid", type=type_, params=params, **kw)


def run(status: str = "completed", **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": RUN,
        "status": status,
        "type": "crawl",
        "queued": 0,
        "in_progress": 0,
        "done": 2,
        "failed": 0,
        "statistics": {"total_results": 2, "success_count": 2, "error_count": 0},
    }
    body.update(kw)
    return body


def result(n: int, **kw: Any) -> dict[str, Any]:
    return {"id": f"r{n}", "url": f"https://a.example/{n}", "error_message": None, **kw}


def pages(results: list[dict[str, Any]], limit: int = 100) -> Any:
    def answer(request: httpx.Request) -> httpx.Response:
        page, size = int(request.url.params["page"]), int(request.url.params["limit"])
        chunk = results[(page - 1) * size : page * size]
        body = {"results": chunk, "page": page, "limit": size, "total": len(results)}
        return httpx.Response(200, json=body)

    return answer


def sink(tmp_path: Path) -> JobDir:
    return JobDir(tmp_path / "jobs" / "j1", "j1")


def lines(job_dir: JobDir) -> list[Any]:
    job_dir.commit()
    text = (job_dir.path / "results.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


# -- pure builders and parsers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "path"),
    [
        ("extract", "/api/v1/extract"),
        ("crawl", "/api/v1/crawl"),
        ("deep_crawl", "/api/v1/deep-crawl"),
        ("map", "/api/v1/map"),
    ],
)
def test_submit_posts_the_params_with_type_added(type_: str, path: str) -> None:
    spec = job(type_, params={"url": "https://a.example", "config": {"maxPages": 3}})
    request = bulkgrid.build_submit(spec)
    assert (request.method, request.path, request.endpoint) == ("POST", path, "submit")
    assert request.json == {"url": "https://a.example", "config": {"maxPages": 3}, "type": type_}


def test_run_ids_are_percent_encoded_and_dot_segments_refused() -> None:
    assert bulkgrid.build_poll("a/b c").path == "/api/v1/runs/a%2Fb%20c"
    with pytest.raises(ProviderResponseError, match=r"refusing the path segment '\.\.'"):
        bulkgrid.build_poll("..")


def test_query_values_are_strings_never_lists() -> None:
    requests = [
        bulkgrid.build_results_page(RUN, 3),
        bulkgrid.build_screenshot(RUN, "r1", download=True),
        bulkgrid.build_list_runs("crawl", 2),
    ]
    for request in requests:
        assert request.params is not None
        assert all(isinstance(v, str) for v in request.params.values())
    assert requests[0].params == {"page": "3", "limit": "100"}
    assert requests[1].params == {"download": "true"}
    assert requests[1].expect == "bytes"


@pytest.mark.parametrize("fmt", ["markdown", "cleanHtml", "rawHtml", "links"])
def test_content_url_carries_the_type_as_one_plain_query_value(fmt: str) -> None:
    url = bulkgrid.content_url(RUN, "r1", fmt)
    assert url == f"{RUN_PATH}/results/r1/content?type={fmt}"
    assert httpx.URL(url).params.get_list("type") == [fmt]  # one value, never a list repr


def test_content_url_encodes_ids_and_refuses_unknown_formats() -> None:
    assert bulkgrid.content_url("a/b", "r 1", "links") == (
        "/api/v1/runs/a%2Fb/results/r%201/content?type=links"
    )
    with pytest.raises(ProviderResponseError) as refused:
        bulkgrid.content_url(RUN, "r1", "x y")
    assert str(refused.value) == "bulkgrid: unknown content format 'x y'"
    with pytest.raises(ProviderResponseError, match=r"refusing the path segment '\.\.'"):
        bulkgrid.content_url(RUN, "..", "markdown")


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("pending", RemoteState.QUEUED),
        ("PROCESSING", RemoteState.RUNNING),
        ("Completed", RemoteState.SUCCEEDED),
        ("failed", RemoteState.FAILED),
        ("cancelled", RemoteState.CANCELLED),
        ("canceled", RemoteState.CANCELLED),
        ("indexing", RemoteState.UNKNOWN),
    ],
)
def test_status_mapping_is_case_insensitive_and_unknown_stays_unknown(
    raw: str, state: RemoteState
) -> None:
    status = bulkgrid.parse_status(run(raw))
    assert (status.state, status.raw) == (state, raw)


def test_progress_counts_done_and_failed_urls() -> None:
    status = bulkgrid.parse_status(run("processing", queued=5, in_progress=2, done=2, failed=1))
    assert status.progress == 0.3
    assert bulkgrid.parse_status(run("pending", done=0)).progress is None


@pytest.mark.parametrize(
    "changes",
    [{"failed": 1}, {"statistics": {"error_count": 2}}],
)
def test_completed_with_failures_is_partial(changes: dict[str, Any]) -> None:
    assert bulkgrid.parse_status(run(**changes)).partial is True
    assert bulkgrid.parse_status(run()).partial is False


def test_failed_run_reason_carries_code_and_last_error() -> None:
    status = bulkgrid.parse_status(run("failed", error_code="FETCH", last_error="dns failure"))
    assert status.reason == "FETCH: dns failure"


def test_a_run_without_status_is_a_response_error() -> None:
    with pytest.raises(ProviderResponseError, match="bulkgrid: the run has no status"):
        bulkgrid.parse_status({"id": RUN})


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, headers or {}, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "code"),
    [
        (401, {"error": "Unauthorized"}, None, ErrorKind.AUTH, "Unauthorized"),
        (403, {"error": "forbidden", "code": "LIMIT_COLLECTIONS"}, None, ErrorKind.CREDITS,
         "LIMIT_COLLECTIONS"),
        (402, {"error": "Payment required"}, None, ErrorKind.CREDITS, None),
        (404, {"error": "Run not found"}, None, ErrorKind.NOT_FOUND, None),
        (422, {"error": {"message": "urls is required"}}, None, ErrorKind.INVALID, None),
        (429, {"error": "Rate limited"}, None, ErrorKind.RATE_LIMITED, None),
        (503, {"error": "overloaded"}, {"retry-after": "3"}, ErrorKind.BUSY, "overloaded"),
        (502, {"error": "Bad gateway"}, None, ErrorKind.TRANSIENT, None),
    ],
)  # fmt: skip
def test_classify_error(
    status: int, body: Any, headers: dict[str, str] | None, kind: ErrorKind, code: str | None
) -> None:
    error = bulkgrid.classify_error(reply(status, body, headers))
    assert (error.kind, error.code) == (kind, code)


def test_classify_error_keeps_the_providers_message() -> None:
    error = bulkgrid.classify_error(reply(422, {"error": {"message": "urls is required"}}))
    assert error.message == "urls is required"
    assert bulkgrid.classify_error(Reply(500, {}, b"<html>oops</html>")).message == (
        "<html>oops</html>"
    )


def test_a_listed_run_is_this_jobs_when_type_and_urls_agree() -> None:
    spec = job("crawl")
    urls = ["https://a.example", "https://b.example"]
    runs = [
        {"id": "ours", "type": "crawl", "urls": urls, "created_at": "2026-11-22T12:00:03.5Z"},
        {"id": "other", "type": "crawl", "urls": urls[:1], "created_at": "2026-11-22T12:00:02Z"},
        {"id": "map", "type": "map", "urls": urls, "created_at": "2026-11-22T12:00:01Z"},
        {"id": "untimed", "type": "crawl", "urls": urls},
    ]
    page = bulkgrid.listing_page({"runs": runs, "page": 1, "total": 250}, 1, spec)
    assert [(r.id, r.created, r.match) for r in page.rows] == [
        ("ours", 1795348803.5, True),
        ("other", 1795348802.0, False),
        ("map", 1795348801.0, False),
        ("untimed", None, True),
    ]
    assert (page.last, page.pages) == (False, 3)


# -- the adapter against a fake client ----------------------------------------------------------


@pytest.mark.anyio
async def test_submit_sends_key_and_type_and_records_the_run_id() -> None:
    http = FakeHttp(bulkgrid.ADAPTER, router({"POST /api/v1/crawl": run("pending", done=0)}))
    submitted = await bulkgrid.BulkgridAdapter().submit(http, job("crawl"))
    assert submitted.ref == RemoteRef(RUN)
    assert submitted.status is not None
    assert submitted.status.state is RemoteState.QUEUED
    (seen,) = http.seen
    assert seen.headers["x-api-key"] == API_KEY
    assert seen.json()["type"] == "crawl"


@pytest.mark.anyio
async def test_fetch_streams_every_page_and_content_per_format(tmp_path: Path) -> None:
    results = [result(n) for n in range(1, 251)]
    results[7]["error_message"] = "timeout"

    def content(request: httpx.Request) -> httpx.Response:
        rid = request.url.path.split("/")[-2]
        return httpx.Response(200, text=f"{request.url.params['type']} of {rid}")

    routes: dict[str, Any] = {f"GET {RUN_PATH}/results": pages(results)}
    for n in range(1, 251):
        routes[f"GET {RUN_PATH}/results/r{n}/content"] = content
    http = FakeHttp(bulkgrid.ADAPTER, router(routes))
    spec = job(fetch={"content": ["markdown", "rawHtml"]})
    out = sink(tmp_path)
    status = bulkgrid.parse_status(run(failed=1))
    report = await bulkgrid.BulkgridAdapter().fetch(http, spec, RemoteRef(RUN), status, out)

    assert [s.query for s in http.seen if s.path.endswith("/results")] == [
        {"page": "1", "limit": "100"},
        {"page": "2", "limit": "100"},
        {"page": "3", "limit": "100"},
    ]
    assert [item["id"] for item in lines(out)] == [f"r{n}" for n in range(1, 251)]
    assert (report.items, report.files, report.partial) == (250, 498, True)
    assert report.notes == ("1 of 250 results failed",)
    assert (out.files_dir / "r1.markdown.md").read_text() == "markdown of r1"
    assert (out.files_dir / "r1.rawHtml.html").read_text() == "rawHtml of r1"
    assert not (out.files_dir / "r8.markdown.md").exists()  # the failed URL has no content
    assert len(list(out.files_dir.iterdir())) == 498
    # Streamed to disk as API downloads (the "download" class, with the key), never `send`.
    contents = [s for s in http.seen if s.path.endswith("/content")]
    assert len(contents) == 498
    assert {(s.endpoint, s.headers["x-api-key"]) for s in contents} == {("download", API_KEY)}
    assert http.downloads[:2] == [
        (f"{RUN_PATH}/results/r1/content?type=markdown", True, None),
        (f"{RUN_PATH}/results/r1/content?type=rawHtml", True, None),
    ]


@pytest.mark.anyio
async def test_content_defaults_to_markdown_as_the_schema_says(tmp_path: Path) -> None:
    routes = {
        f"GET {RUN_PATH}/results": pages([result(1)]),
        f"GET {RUN_PATH}/results/r1/content": httpx.Response(200, text="# hi"),
    }
    http = FakeHttp(bulkgrid.ADAPTER, router(routes))
    out = sink(tmp_path)
    await bulkgrid.BulkgridAdapter().fetch(
        http, job(), RemoteRef(RUN), bulkgrid.parse_status(run()), out
    )
    assert sorted(p.name for p in out.files_dir.iterdir()) == ["r1.markdown.md"]


@pytest.mark.anyio
async def test_missing_content_for_one_result_is_noted_not_fatal(tmp_path: Path) -> None:
    routes = {
        f"GET {RUN_PATH}/results": pages([result(1), result(2)]),
        f"GET {RUN_PATH}/results/r1/content": httpx.Response(404, json={"error": "no content"}),
        f"GET {RUN_PATH}/results/r2/content": httpx.Response(200, text="two"),
    }
    http = FakeHttp(bulkgrid.ADAPTER, router(routes))
    report = await bulkgrid.BulkgridAdapter().fetch(
        http, job(), RemoteRef(RUN), bulkgrid.parse_status(run()), sink(tmp_path)
    )
    assert (report.files, report.partial) == (1, True)
    assert report.notes == ("result r1: no markdown content (HTTP 404: no content)",)


@pytest.mark.anyio
async def test_a_server_error_during_fetch_is_raised(tmp_path: Path) -> None:
    routes = {
        f"GET {RUN_PATH}/results": pages([result(1)]),
        f"GET {RUN_PATH}/results/r1/content": httpx.Response(500, json={"error": "boom"}),
    }
    http = FakeHttp(bulkgrid.ADAPTER, router(routes))
    with pytest.raises(ProviderCallError, match="boom"):
        await bulkgrid.BulkgridAdapter().fetch(
            http, job(), RemoteRef(RUN), bulkgrid.parse_status(run()), sink(tmp_path)
        )


@pytest.mark.anyio
async def test_screenshots_follow_the_signed_url_without_the_key(tmp_path: Path) -> None:
    shot = f"{RUN_PATH}/results/r1/screenshot"
    routes = {
        f"GET {RUN_PATH}/results": pages([result(1, screenshot="s1"), result(2, screenshot="s2",
                                          screenshot_format="jpeg"), result(3)]),
        f"GET {shot}": {"signedUrl": "https://storage.example/signed/r1.png?sig=abc"},
        f"GET {RUN_PATH}/results/r2/screenshot": lambda r: (
            httpx.Response(200, content=b"JPEGDATA") if r.url.params.get("download") == "true"
            else httpx.Response(200, json={})
        ),
        "GET /signed/r1.png": httpx.Response(200, content=b"PNGDATA"),
    }  # fmt: skip
    http = FakeHttp(bulkgrid.ADAPTER, router(routes))
    out = sink(tmp_path)
    spec = job(fetch={"content": [], "screenshots": True})
    report = await bulkgrid.BulkgridAdapter().fetch(
        http, spec, RemoteRef(RUN), bulkgrid.parse_status(run()), out
    )
    assert report.files == 2
    assert (out.files_dir / "r1.screenshot.png").read_bytes() == b"PNGDATA"
    assert (out.files_dir / "r2.screenshot.jpg").read_bytes() == b"JPEGDATA"
    storage = [s for s in http.seen if s.url.host == "storage.example"]
    assert len(storage) == 1
    assert "x-api-key" not in storage[0].headers
    assert http.downloads == [("https://storage.example/signed/r1.png?sig=abc", False, None)]


@pytest.mark.anyio
async def test_map_runs_write_their_links_as_items(tmp_path: Path) -> None:
    links = ["https://a.example/", "https://a.example/docs", {"url": "https://a.example/x"}]
    status = bulkgrid.parse_status(run(type="map", result_data={"links": links}))
    http = FakeHttp(bulkgrid.ADAPTER, router({}))
    out = sink(tmp_path)
    report = await bulkgrid.BulkgridAdapter().fetch(http, job("map"), RemoteRef(RUN), status, out)
    assert report.items == 3
    assert http.seen == []
    assert lines(out) == links


@pytest.mark.anyio
async def test_map_links_missing_from_the_status_are_read_from_the_run(tmp_path: Path) -> None:
    http = FakeHttp(
        bulkgrid.ADAPTER, router({f"GET {RUN_PATH}": run(result_data={"links": ["u"]})})
    )
    out = sink(tmp_path)
    status = Status(RemoteState.SUCCEEDED, "completed", payload={"id": RUN})
    await bulkgrid.BulkgridAdapter().fetch(http, job("map"), RemoteRef(RUN), status, out)
    assert lines(out) == ["u"]


@pytest.mark.anyio
async def test_retry_failed_reruns_only_the_failed_urls_once() -> None:
    done_with_failure = run(failed=1, done=1)
    results = [result(1), result(2, error_message="timeout"), result(3, status_code=503)]
    routes = {
        f"GET {RUN_PATH}": [
            httpx.Response(200, json=done_with_failure),
            httpx.Response(200, json=run("processing")),
            httpx.Response(200, json=done_with_failure),
        ],
        f"GET {RUN_PATH}/results": pages(results),
        f"POST {RUN_PATH}/retry": run("pending"),
    }
    http = FakeHttp(bulkgrid.ADAPTER, router(routes))
    adapter = bulkgrid.BulkgridAdapter()
    spec = job(retry="failed")

    first = await adapter.poll(http, spec, RemoteRef(RUN))
    assert (first.state, first.phase) == (RemoteState.QUEUED, "retrying")
    retry = [s for s in http.seen if s.method == "POST"]
    assert [s.json() for s in retry] == [{"urls": ["https://a.example/2", "https://a.example/3"]}]
    assert (await adapter.poll(http, spec, RemoteRef(RUN))).state is RemoteState.RUNNING
    last = await adapter.poll(http, spec, RemoteRef(RUN))
    assert (last.state, last.partial) == (RemoteState.SUCCEEDED, True)
    assert sum(s.method == "POST" for s in http.seen) == 1


@pytest.mark.anyio
async def test_without_retry_a_partial_run_is_final_at_once() -> None:
    http = FakeHttp(bulkgrid.ADAPTER, router({f"GET {RUN_PATH}": run(failed=1)}))
    status = await bulkgrid.BulkgridAdapter().poll(http, job(), RemoteRef(RUN))
    assert (status.state, status.partial) == (RemoteState.SUCCEEDED, True)
    assert http.paths() == [f"GET {RUN_PATH}"]


@pytest.mark.anyio
async def test_cancel_posts_without_a_body() -> None:
    http = FakeHttp(bulkgrid.ADAPTER, router({f"POST {RUN_PATH}/cancel": {"success": True}}))
    await bulkgrid.BulkgridAdapter().cancel(http, job(), RemoteRef(RUN))
    (seen,) = http.seen
    assert seen.body == b""
    assert "content-type" not in seen.headers


@pytest.mark.anyio
async def test_a_cancel_answered_without_success_is_not_accepted() -> None:
    refused = {f"POST {RUN_PATH}/cancel": {"success": False}}
    http = FakeHttp(bulkgrid.ADAPTER, router(refused))
    with pytest.raises(ProviderResponseError) as info:
        await bulkgrid.BulkgridAdapter().cancel(http, job(), RemoteRef(RUN))
    assert str(info.value).startswith("bulkgrid: the cancel was not accepted: ")
    assert json.loads(info.value.excerpt) == {"success": False}


@pytest.mark.anyio
async def test_reconcile_pages_the_run_list_by_type() -> None:
    urls = ["https://a.example", "https://b.example"]

    def listing(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        runs = [{"id": f"x{page}-{i}", "type": "crawl", "urls": ["https://z.example"],
                 "created_at": "2026-11-22T12:00:01Z"} for i in range(100)]  # fmt: skip
        if page == 2:
            runs[5] = {"id": "found", "type": "crawl", "urls": urls,
                       "created_at": "2026-11-22T12:00:01Z"}  # fmt: skip
        return httpx.Response(200, json={"runs": runs, "page": page, "total": 300})

    http = FakeHttp(bulkgrid.ADAPTER, router({"GET /api/v1/runs": listing}))
    ref = await bulkgrid.BulkgridAdapter().reconcile(http, job(), 1795348800.0)
    assert ref == RemoteRef("found")
    # Equal times show no order: pages are read on until the run is found.
    assert [s.query for s in http.seen] == [
        {"type": "crawl", "page": "1", "limit": "100", "orderBy": "-created_at"},
        {"type": "crawl", "page": "2", "limit": "100", "orderBy": "-created_at"},
    ]


TWIN_URLS = ["https://a.example", "https://b.example"]


def twin_runs(request: httpx.Request) -> httpx.Response:
    """Two runs of one type and URLs, as two identical jobs' lost submits would leave."""
    runs = [
        {"id": f"twin-{n}", "type": "crawl", "urls": TWIN_URLS,
         "created_at": f"2026-11-22T12:00:0{n}Z"}
        for n in (2, 1)
    ]  # fmt: skip
    return httpx.Response(200, json={"runs": runs, "page": 1, "total": 2})


@pytest.mark.anyio
async def test_reconcile_never_adopts_a_run_another_job_of_the_batch_adopted() -> None:
    http = FakeHttp(bulkgrid.ADAPTER, router({"GET /api/v1/runs": twin_runs}))
    adapter = bulkgrid.BulkgridAdapter()
    since = 1795348800.0
    first = await adapter.reconcile(http, job(), since)
    second = await adapter.reconcile(http, job(), since)
    assert (first, second) == (RemoteRef("twin-2"), RemoteRef("twin-1"))  # newest first
    # The whole list read, both runs owned by siblings: a third twin provably made none.
    with pytest.raises(NotSubmittedError):
        await adapter.reconcile(http, job(), since)
    # Another batch (another client) has its own memory.
    other = FakeHttp(bulkgrid.ADAPTER, router({"GET /api/v1/runs": twin_runs}))
    assert await adapter.reconcile(other, job(), since) == RemoteRef("twin-2")


@pytest.mark.anyio
async def test_reconcile_skips_runs_this_batch_submitted_or_polled() -> None:
    routes = {
        "GET /api/v1/runs": twin_runs,
        "POST /api/v1/crawl": run("pending", id="twin-1", done=0),
        "GET /api/v1/runs/twin-2": run(id="twin-2"),
    }
    http = FakeHttp(bulkgrid.ADAPTER, router(routes))
    adapter = bulkgrid.BulkgridAdapter()
    assert (await adapter.submit(http, job())).ref == RemoteRef("twin-1")
    assert await adapter.reconcile(http, job(), 1795348800.0) == RemoteRef("twin-2")
    polled = FakeHttp(bulkgrid.ADAPTER, router(routes))
    await adapter.poll(polled, job(), RemoteRef("twin-2"))
    assert await adapter.reconcile(polled, job(), 1795348800.0) == RemoteRef("twin-1")


@pytest.mark.anyio
async def test_a_retry_in_a_new_run_is_followed_and_both_runs_are_fetched(tmp_path: Path) -> None:
    retry_run = "77777777-8d8e-46db-9191-9d6a3df9cb31"
    first = [result(1), result(2, error_message="timeout")]
    second = [{"id": "n2", "url": "https://a.example/2", "error_message": None}]
    routes = {
        f"GET {RUN_PATH}": run(failed=1, done=1),
        f"GET {RUN_PATH}/results": pages(first),
        f"POST {RUN_PATH}/retry": run("pending", id=retry_run),
        f"GET /api/v1/runs/{retry_run}": run(id=retry_run),
        f"GET /api/v1/runs/{retry_run}/results": pages(second),
        f"GET {RUN_PATH}/results/r1/content": httpx.Response(200, text="one"),
        f"GET /api/v1/runs/{retry_run}/results/n2/content": httpx.Response(200, text="two"),
    }
    http = FakeHttp(bulkgrid.ADAPTER, router(routes))
    adapter = bulkgrid.BulkgridAdapter()
    spec = job(retry="failed")
    assert (await adapter.poll(http, spec, RemoteRef(RUN))).phase == "retrying"
    final = await adapter.poll(http, spec, RemoteRef(RUN))
    assert (final.state, final.partial) == (RemoteState.SUCCEEDED, False)
    assert http.seen[-1].path == f"/api/v1/runs/{retry_run}"
    out = sink(tmp_path)
    report = await adapter.fetch(http, spec, RemoteRef(RUN), final, out)
    assert [item["id"] for item in lines(out)] == ["r1", "n2"]
    assert (report.items, report.files, report.partial) == (2, 2, False)


@pytest.mark.anyio
async def test_the_retry_is_noted_before_it_is_sent_and_never_sent_twice() -> None:
    def retry(request: httpx.Request) -> httpx.Response:
        assert http.job_notes == {"retry_sent": True}  # journaled before the POST left
        return httpx.Response(502, text="bad gateway")  # the reply is lost

    routes = {
        f"GET {RUN_PATH}": run(failed=1, done=1),
        f"GET {RUN_PATH}/results": pages([result(1), result(2, error_message="timeout")]),
        f"POST {RUN_PATH}/retry": retry,
    }
    http = FakeHttp(bulkgrid.ADAPTER, router(routes))
    with pytest.raises(ProviderCallError):
        await bulkgrid.BulkgridAdapter().poll(http, job(retry="failed"), RemoteRef(RUN))
    # A new process with the journaled notes: the retry may have happened, so never again.
    resumed = FakeHttp(bulkgrid.ADAPTER, router(routes), job_notes=dict(http.job_notes))
    status = await bulkgrid.BulkgridAdapter().poll(resumed, job(retry="failed"), RemoteRef(RUN))
    assert (status.state, status.partial) == (RemoteState.SUCCEEDED, True)
    assert resumed.paths() == [f"GET {RUN_PATH}"]


@pytest.mark.anyio
async def test_a_resumed_job_follows_the_noted_retry_run() -> None:
    other = "77777777-8d8e-46db-9191-9d6a3df9cb31"
    routes = {f"GET /api/v1/runs/{other}": run(id=other)}
    notes = {"retry_sent": True, "retry_run": other}
    http = FakeHttp(bulkgrid.ADAPTER, router(routes), job_notes=notes)
    status = await bulkgrid.BulkgridAdapter().poll(http, job(retry="failed"), RemoteRef(RUN))
    assert (status.state, status.partial) == (RemoteState.SUCCEEDED, False)
    assert http.paths() == [f"GET /api/v1/runs/{other}"]
