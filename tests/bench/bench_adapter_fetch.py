"""Bulkgrid and Lobstr result streaming: time per result and peak memory vs result count.

Run: .venv/bin/python tests/bench/bench_adapter_fetch.py
Adapters fetch through a fake client on httpx.MockTransport (no network, no gate), into a
real JobDir: the numbers are the adapter + parsing + results.jsonl cost alone. Peak memory
(tracemalloc) must stay flat as the count grows: one page is held at a time.
"""

from __future__ import annotations

import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runner.plan import JobSpec
from runner.providers import bulkgrid, lobstr
from runner.remote import RemoteRef
from runner.store.results import JobDir
from tests.providers.fakes import FakeHttp

ROW = {"title": "x" * 200, "url": "https://a.example/", "status_code": 200, "error_message": None}


def bulkgrid_pages(total: int) -> Any:
    def handle(request: httpx.Request) -> httpx.Response:
        page, size = int(request.url.params["page"]), int(request.url.params["limit"])
        start = (page - 1) * size
        rows = [{**ROW, "id": f"r{i}"} for i in range(start, min(start + size, total))]
        return httpx.Response(200, json={"results": rows, "page": page, "total": total})

    return handle


def lobstr_pages(total: int) -> Any:
    def handle(request: httpx.Request) -> httpx.Response:
        page, size = int(request.url.params["page"]), int(request.url.params["page_size"])
        start = (page - 1) * size
        rows = [{**ROW, "id": i} for i in range(start, min(start + size, total))]
        pages = -(-total // size)
        return httpx.Response(200, json={"data": rows, "page": page, "total_pages": pages})

    return handle


async def measure(name: str, total: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        sink = JobDir(Path(tmp) / "j", "j")
        if name == "bulkgrid":
            http = FakeHttp(bulkgrid.ADAPTER, bulkgrid_pages(total), keep=False)
            job = JobSpec("j", "bulkgrid", "crawl", {"urls": []}, fetch={"content": []})
            status = bulkgrid.parse_status({"id": "r", "status": "completed"})
            adapter: Any = bulkgrid.BulkgridAdapter()
        else:
            http = FakeHttp(lobstr.ADAPTER, lobstr_pages(total), keep=False)
            job = JobSpec("j", "lobstr", "run", {"squid": "s"})
            status = lobstr.parse_status({"id": "r", "status": "done", "export_done": True})
            adapter = lobstr.LobstrAdapter()
        tracemalloc.start()
        started = time.perf_counter()
        await adapter.fetch(http, job, RemoteRef("r"), status, sink)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        sink.commit()
        return elapsed / total * 1e6, peak / 1e6


async def main() -> None:
    print(f"{'provider':<9} {'results':>8} {'us/result':>10} {'peak MB':>8}")
    for name in ("bulkgrid", "lobstr"):
        for total in (1_000, 10_000, 50_000):
            per, peak = await measure(name, total)
            print(f"{name:<9} {total:>8} {per:>10.1f} {peak:>8.2f}")


if __name__ == "__main__":
    anyio.run(main)
