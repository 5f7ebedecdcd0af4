"""Spidra batch and crawl jobs: submit, status, retry once, paged fetch with signed links,
cancel, and reconcile from the batch list / crawl history (unit tests over MockTransport)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.errors import NotCancellableError, NotSubmittedError, ProviderCallError
from runner.plan import JobSpec
from runner.providers import spidra
from runner.providers.base import Reply
from runner.remote import RemoteRef, RemoteState
from runner.store.results import JobDir
from tests.providers.fakes import FakeHttp, router

BATCH = "b-0001"
CRAWL = "c-0001"
URLS = ["https://a.example/1", "https://a.example/2", "https://a.example/3"]
SINCE = 1795348800.0  # 2026-11-22T12:00:00Z


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def batch_job(**kw: Any) -> JobSpec:
    return JobSpec("b", "spidra", "batch", {"urls": URLS, "prompt": "title"}, **kw)


def crawl_job(**fetch: Any) -> JobSpec:
    return JobSpec("c", "spidra", "crawl", {"baseUrl": "https://a.example"}, fetch=fetch)


def item(n: int, status: str = "completed", **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uuid": f"u{n}",
        "url": URLS[n],
        "jobId": f"j{n}",
        "status": status,
        "result": {"content": f"page {n}"} if status == "completed" else None,
        "creditsUsed": 2,
        "finishedAt": "2026-01-05T09:00:10Z",
        "screenshotUrl": None,
        "error": "net::ERR_NAME_NOT_RESOLVED" if status == "failed" else None,
    }
    body.update(kw)
    return body


def batch(status: str = "completed", items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    items = items if items is not None else [item(0), item(1, "failed"), item(2)]
    done = sum(i["status"] == "completed" for i in items)
    failed = sum(i["status"] == "failed" for i in items)
    return {
        "status": status,
        "totalUrls": len(items),
        "completedCount": done,
        "failedCount": failed,
        "createdAt": "2026-01-05T09:00:00Z",
        "finishedAt": None,
        "items": items,
    }


def lines(out: JobDir) -> list[Any]:
    out.commit()
    return [json.loads(x) for x in (out.path / "results.jsonl").read_text().splitlines()]


# -- batch ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_batch_submit_posts_plain_urls_and_reads_the_batch_id() -> None:
    http = FakeHttp(spidra.ADAPTER, router({"POST /batch/scrape": {"batchId": BATCH, "total": 3}}))
    submitted = await spidra.SpidraAdapter().submit(http, batch_job())
    assert http.seen[0].json() == {"urls": URLS, "prompt": "title"}
    assert submitted.ref == RemoteRef(BATCH)
    assert submitted.status is not None
    assert submitted.status.state is RemoteState.QUEUED


@pytest.mark.parametrize(
    ("body", "state", "partial", "progress"),
    [
        (batch("pending", [item(0, "pending")]), RemoteState.QUEUED, False, 0.0),
        (batch("running", [item(0), item(1, "running")]), RemoteState.RUNNING, False, 0.5),
        (batch("completed", [item(0), item(1)]), RemoteState.SUCCEEDED, False, 1.0),
        (batch(), RemoteState.SUCCEEDED, True, 1.0),
        (batch("cancelled", [item(0, "failed")]), RemoteState.CANCELLED, False, 1.0),
    ],
)
def test_batch_status(body: Any, state: RemoteState, partial: bool, progress: float) -> None:
    status = spidra.parse_status(Reply(200, {}, json.dumps(body).encode()), "batch")
    assert (status.state, status.partial, status.progress) == (state, partial, progress)


def test_a_failed_batch_says_why() -> None:
    body = batch("failed", [item(0, "failed"), item(1, "failed")])
    status = spidra.parse_status(Reply(200, {}, json.dumps(body).encode()), "batch")
    assert status.reason == "all 2 items failed (first: net::ERR_NAME_NOT_RESOLVED)"


@pytest.mark.anyio
async def test_batch_fetch_writes_one_line_per_item_and_screenshots_without_the_key(
    tmp_path: Path,
) -> None:
    shot = "https://s3.example/shots/0.png?X-Amz-Signature=1"
    body = batch(items=[item(0, screenshotUrl=shot), item(1, "failed"), item(2)])
    http = FakeHttp(
        spidra.ADAPTER, router({"GET /shots/0.png": httpx.Response(200, content=b"PNG")})
    )
    status = spidra.batch_status(body, "completed")
    out = JobDir(tmp_path / "b", "b")
    job = JobSpec("b", "spidra", "batch", {"urls": URLS}, fetch={"screenshots": True})
    report = await spidra.SpidraAdapter().fetch(http, job, RemoteRef(BATCH), status, out)
    assert lines(out) == [
        {"url": URLS[0], "status": "completed", "result": {"content": "page 0"}, "error": None,
         "screenshot": "files/item-001.png"},
        {"url": URLS[1], "status": "failed", "result": None,
         "error": "net::ERR_NAME_NOT_RESOLVED"},
        {"url": URLS[2], "status": "completed", "result": {"content": "page 2"}, "error": None},
    ]  # fmt: skip
    assert (out.files_dir / "item-001.png").read_bytes() == b"PNG"
    assert http.downloads == [(shot, False, None)]
    assert "authorization" not in http.seen[0].headers
    assert (report.items, report.files, report.partial) == (3, 1, True)
    assert report.notes == ("1 of 3 items failed",)
    assert report.outcome == {
        "total_urls": 3, "failed_items": 1, "retried_items": None, "credits_used": 6,
    }  # fmt: skip


@pytest.mark.anyio
async def test_retry_failed_posts_once_noted_first_and_waits_for_the_rerun() -> None:
    before = batch()
    stale = batch()  # a poll that still shows the old failure
    after = batch(items=[item(0), item(1, finishedAt="2026-01-05T09:00:30Z"), item(2)])

    def retry(request: httpx.Request) -> httpx.Response:
        assert http.job_notes == {"retry_sent": {"u1": "2026-01-05T09:00:10Z"}}
        return httpx.Response(200, json={"retriedCount": 1})

    routes = {
        f"GET /batch/scrape/{BATCH}": [httpx.Response(200, json=b) for b in (before, stale, after)],
        f"POST /batch/scrape/{BATCH}/retry": retry,
    }
    http = FakeHttp(spidra.ADAPTER, router(routes))
    adapter = spidra.SpidraAdapter()
    job = batch_job(retry="failed")
    states = [await adapter.poll(http, job, RemoteRef(BATCH)) for _ in range(3)]
    assert [(s.state, s.phase) for s in states[:2]] == [
        (RemoteState.RUNNING, "retrying failed items"),
        (RemoteState.RUNNING, "retrying failed items"),
    ]
    assert (states[2].state, states[2].partial) == (RemoteState.SUCCEEDED, False)
    assert http.seen[1].json() == {}
    assert sum(s.method == "POST" for s in http.seen) == 1
    assert http.job_notes["retried"] == 1


@pytest.mark.anyio
async def test_a_retry_whose_reply_was_lost_is_never_sent_again() -> None:
    routes = {
        f"GET /batch/scrape/{BATCH}": batch(),
        f"POST /batch/scrape/{BATCH}/retry": httpx.Response(504, text="gateway timeout"),
    }
    http = FakeHttp(spidra.ADAPTER, router(routes))
    with pytest.raises(ProviderCallError):
        await spidra.SpidraAdapter().poll(http, batch_job(retry="failed"), RemoteRef(BATCH))
    resumed = FakeHttp(spidra.ADAPTER, router(routes), job_notes=dict(http.job_notes))
    status = await spidra.SpidraAdapter().poll(resumed, batch_job(retry="failed"), RemoteRef(BATCH))
    assert (status.state, status.partial) == (RemoteState.SUCCEEDED, True)
    assert resumed.paths() == [f"GET /batch/scrape/{BATCH}"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("job", "path"),
    [
        (batch_job(), f"DELETE /batch/scrape/{BATCH}"),
        (
            JobSpec("c", "spidra", "crawl", {"baseUrl": "https://a.example"}),
            f"DELETE /crawl/{BATCH}",
        ),
    ],
)
async def test_batch_and_crawl_cancel_with_delete(job: JobSpec, path: str) -> None:
    http = FakeHttp(spidra.ADAPTER, router({path: {"status": "cancelled"}}))
    await spidra.SpidraAdapter().cancel(http, job, RemoteRef(BATCH))
    assert http.paths() == [path]


@pytest.mark.anyio
async def test_a_scrape_cannot_be_cancelled_and_nothing_is_sent() -> None:
    http = FakeHttp(spidra.ADAPTER, router({}))
    scrape = JobSpec("s", "spidra", "scrape", {"urls": [{"url": "https://a.example"}]})
    with pytest.raises(NotCancellableError) as info:
        await spidra.SpidraAdapter().cancel(http, scrape, RemoteRef(BATCH))
    assert str(info.value) == "provider has no cancel: the remote job runs on"
    assert http.seen == []


# -- crawl ------------------------------------------------------------------------------------


def test_crawl_always_sends_a_crawl_instruction() -> None:
    assert spidra.build_submit(crawl_job()).json == {
        "baseUrl": "https://a.example",
        "crawlInstruction": "Find all pages on the website",
    }
    own = JobSpec(
        "c", "spidra", "crawl", {"baseUrl": "https://a.example", "crawlInstruction": "docs"}
    )
    assert spidra.build_submit(own).json == {
        "baseUrl": "https://a.example",
        "crawlInstruction": "docs",
    }


def inline_page(n: int, failed: bool = False) -> dict[str, Any]:
    return {
        "url": f"https://a.example/p{n}",
        "title": f"P{n}",
        "status": "failed" if failed else "success",
        "data": None if failed else {"n": n},
        "html": None if failed else f"https://files.example/p{n}.html?sig=1",
        "markdown": None if failed else f"https://files.example/p{n}.md?sig=1",
    }


def listed_page(n: int) -> dict[str, Any]:
    return {
        "id": f"id{n}",
        "url": f"https://a.example/p{n}",
        "status": "success",
        "data": json.dumps({"n": n}),
        "error_message": None,
        "html": f"https://files.example/p{n}.html?sig=1",
        "markdown": f"https://files.example/p{n}.md?sig=1",
    }


@pytest.mark.anyio
async def test_crawl_fetch_pages_past_the_inline_hundred_and_downloads_links(
    tmp_path: Path,
) -> None:
    total = 2105
    inline = [inline_page(n) for n in range(100)]
    body = {"status": "completed", "result": inline, "totalPages": total, "resultTruncated": True}

    def pages(request: httpx.Request) -> httpx.Response:
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        rows = [listed_page(n) for n in range(offset, min(offset + limit, total))]
        more = offset + len(rows) < total
        return httpx.Response(200, json={"pages": rows, "total": total, "hasMore": more})

    def file(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/p5.md":
            return httpx.Response(403, text="<Error>Request has expired</Error>")
        return httpx.Response(200, content=request.url.path.encode())

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "files.example":
            return file(request)
        return pages(request)

    http = FakeHttp(spidra.ADAPTER, handle)
    out = JobDir(tmp_path / "c", "c")
    status = spidra.crawl_status(body, "completed")
    report = await spidra.SpidraAdapter().fetch(
        http, crawl_job(markdown=True), RemoteRef(CRAWL), status, out
    )
    api = [s for s in http.seen if s.url.host != "files.example"]
    assert [s.query for s in api] == [
        {"offset": "100", "limit": "1000"},
        {"offset": "1100", "limit": "1000"},
        {"offset": "2100", "limit": "1000"},
    ]
    written = lines(out)
    assert len(written) == total
    assert written[0]["files"] == {"markdown": "files/page-00001.md"}
    assert "files" not in written[5]  # its link had expired
    assert written[150]["data"] == {"n": 150}  # /pages sends data as JSON text
    assert (out.files_dir / "page-02105.md").read_bytes() == b"/p2104.md"
    assert not list(out.files_dir.glob("*.html"))  # html was not asked for
    assert all(send_key is False for _, send_key, _ in http.downloads)
    assert (report.items, report.files, report.partial) == (total, total - 1, True)
    assert report.notes == (
        "page 6: page-00006.md could not be downloaded (HTTP 403: <Error>Request has expired"
        "</Error>)",
    )
    assert report.outcome == {"pages": total, "failed_pages": 0}


@pytest.mark.anyio
async def test_crawl_with_failed_pages_is_partial_and_needs_no_extra_request(
    tmp_path: Path,
) -> None:
    body = {"status": "completed", "result": [inline_page(0), inline_page(1, failed=True)]}
    status = spidra.crawl_status(body, "completed")
    assert status.partial is True
    http = FakeHttp(spidra.ADAPTER, router({}))
    out = JobDir(tmp_path / "c", "c")
    report = await spidra.SpidraAdapter().fetch(http, crawl_job(), RemoteRef(CRAWL), status, out)
    assert http.seen == []
    assert [line["status"] for line in lines(out)] == ["success", "failed"]
    assert (report.items, report.files, report.notes) == (2, 0, ("1 of 2 pages failed",))


# -- reconcile ---------------------------------------------------------------------------------


def listing(rows: list[dict[str, Any]], key: str = "pagination") -> dict[str, Any]:
    paging = {"page": 1, "limit": 50, "total": len(rows), "totalPages": 1}
    return {"jobs": rows, key: paging} if key == "pagination" else {"jobs": rows, **paging}


@pytest.mark.anyio
async def test_batch_reconcile_reads_recent_candidates_and_matches_their_urls() -> None:
    rows = [
        {"batchId": "old", "totalUrls": 3, "createdAt": "2026-11-22T11:50:00Z"},
        {"batchId": "sibling", "totalUrls": 3, "createdAt": "2026-11-22T12:00:01Z"},
        {"batchId": "other-urls", "totalUrls": 3, "createdAt": "2026-11-22T12:00:02Z"},
        {"batchId": "two-urls", "totalUrls": 2, "createdAt": "2026-11-22T12:00:02Z"},
        {"batchId": "ours", "totalUrls": 3, "createdAt": "2026-11-22T12:00:03Z"},
    ]
    other = batch(items=[item(0), item(1), item(2, url="https://b.example")])
    routes = {
        "GET /batch/scrape": listing(rows),
        "GET /batch/scrape/other-urls": other,
        "GET /batch/scrape/ours": batch(),
        "GET /batch/scrape/sibling": batch(),
    }
    http = FakeHttp(spidra.ADAPTER, router(routes))
    adapter = spidra.SpidraAdapter()
    await adapter.poll(http, batch_job(), RemoteRef("sibling"))  # another job's batch
    http.seen.clear()
    assert await adapter.reconcile(http, batch_job(), SINCE) == RemoteRef("ours")
    # Oldest first (as the times show): read from the newest end, so "ours" is first.
    assert http.paths() == ["GET /batch/scrape", "GET /batch/scrape/ours"]
    assert http.seen[0].query == {"page": "1", "limit": "50"}


@pytest.mark.anyio
async def test_a_complete_list_of_batches_older_than_the_submit_proves_absence() -> None:
    rows = [{"batchId": "x", "totalUrls": 3, "createdAt": "2026-01-05T09:00:00Z"}]
    http = FakeHttp(spidra.ADAPTER, router({"GET /batch/scrape": listing(rows)}))
    with pytest.raises(NotSubmittedError, match="no batch of these URLs was created"):
        await spidra.SpidraAdapter().reconcile(http, batch_job(), SINCE)
    assert http.paths() == ["GET /batch/scrape"]


@pytest.mark.anyio
async def test_crawl_reconcile_matches_the_base_url_in_the_history() -> None:
    rows = [
        {"jobId": "elsewhere", "baseUrl": "https://b.example", "createdAt": "2026-11-22T12:00:01Z"},
        {"jobId": "found", "baseUrl": "https://a.example", "createdAt": "2026-11-22T11:59:30Z"},
    ]
    http = FakeHttp(spidra.ADAPTER, router({"GET /crawl/history": listing(rows, key="flat")}))
    assert await spidra.SpidraAdapter().reconcile(http, crawl_job(), SINCE) == RemoteRef("found")
    scrape = JobSpec("s", "spidra", "scrape", {"urls": [{"url": "https://a.example"}]})
    assert await spidra.SpidraAdapter().reconcile(http, scrape, SINCE) is None
    assert http.paths() == ["GET /crawl/history"]
