"""Which job types each provider can cancel is a declared fact (`ProviderInfo.cancellable`),
and every adapter keeps to it: a declared type sends exactly one cancel request, any other
raises NotCancellableError having sent nothing. The README's provider table says the same."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from runner.errors import NotCancellableError
from runner.plan import JobSpec
from runner.providers.base import NO_CANCEL
from runner.providers.registry import ADAPTERS, PROVIDERS
from runner.remote import RemoteRef
from tests.providers.fakes import FakeHttp

README = Path(__file__).resolve().parents[2] / "README.md"

# What each provider's public API can cancel (see the README's "can be cancelled" column).
DECLARED = {
    "bulkgrid": ("extract", "crawl", "deep_crawl", "map"),
    "lobstr": ("run",),
    "spidra": ("batch", "crawl"),
    "skop": (),
    "pulse": ("extract", "schema", "split", "tables"),
}
CASES = [(name, kind) for name, info in PROVIDERS.items() for kind in info.job_types]


def test_the_declared_facts() -> None:
    assert {name: info.cancellable for name, info in PROVIDERS.items()} == DECLARED
    for info in PROVIDERS.values():
        assert set(info.cancellable) <= set(info.job_types)


def accept_anything(request: httpx.Request) -> httpx.Response:
    # The union of the providers' documented cancel answers: accepted wherever it lands.
    return httpx.Response(200, json={"success": True, "status": "cancelled", "id": "r1"})


@pytest.mark.anyio
@pytest.mark.parametrize(("provider", "kind"), CASES)
async def test_cancel_sends_one_request_exactly_where_declared(provider: str, kind: str) -> None:
    adapter = ADAPTERS[provider]
    http = FakeHttp(adapter, accept_anything)
    job = JobSpec(f"{provider}-{kind}", provider, kind, {})
    if adapter.info.can_cancel(kind):
        await adapter.cancel(http, job, RemoteRef("r1"))
        assert len(http.seen) == 1
        assert http.seen[0].method in ("POST", "DELETE")
    else:
        with pytest.raises(NotCancellableError) as info:
            await adapter.cancel(http, job, RemoteRef("r1"))
        assert str(info.value) == NO_CANCEL == "provider has no cancel: the remote job runs on"
        assert http.seen == []


def readme_cancel_column() -> dict[str, str]:
    """provider title → its "can be cancelled" cell, from the README's provider table."""
    text = README.read_text("utf-8")
    table = text[text.index("| provider | job types | submit → id |") :].split("\n\n")[0]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    return {row[0].strip("| "): row[-1].strip("| ") for row in rows}


def test_the_readme_table_says_what_can_be_cancelled() -> None:
    column = readme_cancel_column()
    for info in PROVIDERS.values():
        head = column[info.title].split("(")[0].split(":")[0].strip()  # "batch, crawl"
        said = () if head == "none" else tuple(t.strip() for t in head.split(","))
        assert said == info.cancellable, (info.name, column[info.title])
