"""Ambiguous submits over real sockets: a 5xx injected before the job exists is proved absent
from the provider's listing and sent again; one injected after is found and adopted; where
no listing exists the job stays submit_unknown. Then a few hundred jobs of all five
providers under 5 % 5xx, 1 % dropped connections and a 429 storm, checked against the books.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.batch.run import run_batch
from runner.sandbox.server import RunningSandbox
from tests.conftest import MakeSandbox
from tests.e2e import fault_load
from tests.e2e.helpers import FAST_POLL, manifest, run

pytestmark = pytest.mark.e2e

SHORT = {"duration": {"min": 0.05, "max": 0.2}, "results": {"min": 1, "max": 2}}
FAST = {"rate": 100, "per": "1s"}
# Every endpoint class too: Lobstr's published per-endpoint budgets are slow (90 submits/min).
LIMITS = {"requests": FAST, "submit": FAST, "status": FAST, "results": FAST, "in_flight": 50}
LISTERS = [
    {"id": "bg-{n}", "provider": "bulkgrid", "type": "extract",
     "each": [f"shop{i}" for i in range(12)],
     "params": {"urls": ["https://{item}.example/"], "query": "Every price",
                "schema": {"type": "object"}}},
    {"id": "sb-{n}", "provider": "spidra", "type": "batch",
     "each": [f"blog{i}" for i in range(6)],
     "params": {"urls": ["https://{item}.example/a"]}},
    {"id": "sc-{n}", "provider": "spidra", "type": "crawl",
     "each": [f"help{i}" for i in range(6)],
     "params": {"baseUrl": "https://{item}.example/", "maxPages": 2}},
    {"id": "lo-{n}", "provider": "lobstr", "type": "run",
     "each": [f"city{i}" for i in range(4)],
     "params": {"crawler": "google-maps-search-export", "params": {"language": "fr"},
                "tasks": [{"url": "https://maps.example/{item}"}]},
     "fetch": {"results": True, "export": False}},
]  # fmt: skip
PROVIDERS = {
    name: {"api_key": f"${{{var}}}", "limits": LIMITS}
    for name, var in (
        ("bulkgrid", "BULKGRID_API_KEY"),
        ("spidra", "SPIDRA_API_KEY"),
        ("lobstr", "LOBSTR_API_KEY"),
    )
}
LIST_LABELS = fault_load.LIST_LABELS


def bursts(after_accept: bool) -> dict[str, Any]:
    burst = {"status": 500, "count": 1, "every": 4, "after_accept": after_accept, "on": "submits"}
    names = ("bulkgrid", "spidra", "lobstr")
    return {"defaults": SHORT, "providers": {name: {"error_burst": burst} for name in names}}


@pytest.mark.parametrize(
    ("after_accept", "books_key"), [(False, "submits_lost"), (True, "submits_unanswered")]
)
def test_a_5xx_to_a_submit_is_settled_from_the_listing_never_left_unknown(
    tmp_path: Path, make_sandbox: MakeSandbox, after_accept: bool, books_key: str
) -> None:
    sandbox = make_sandbox(scenario=bursts(after_accept))
    path = manifest(tmp_path, LISTERS, providers=PROVIDERS)
    outcome = run(tmp_path, path, sandbox, env=fault_load.KEYS)
    assert set(outcome.states().values()) == {"succeeded"}, outcome.stderr
    assert outcome.code == 0
    faulted = 0
    for name, jobs in (("bulkgrid", 12), ("spidra", 12), ("lobstr", 4)):
        books = outcome.books[name]
        assert set(books["submits"].values()) == {1}, books["submits"]  # never twice
        if name != "lobstr":
            assert len(books["submits"]) == jobs  # every job created, exactly once
        faulted += sum(books[books_key].values())
    assert faulted >= 3  # the faults did hit submits
    lists = sum(
        n for b in outcome.books.values() for k, n in b["requests"].items() if k in LIST_LABELS
    )
    assert lists <= 3 * faulted  # bounded: a lookup stops at the submit, not at page 10


def test_a_lost_submit_is_proved_absent_in_one_list_request_when_the_batch_has_an_anchor(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    # Every 41st Bulkgrid submit is refused before it arrives, with 40 runs or more on the
    # list. Newest first, the listing reaches a run of the batch answered before that submit
    # left within its first page: absent, sent again, one list request each.
    burst = {"status": 500, "count": 1, "every": 41, "after_accept": False, "on": "submits"}
    sandbox = make_sandbox(scenario={"defaults": SHORT, "providers": {"bulkgrid": {
        "error_burst": burst}}})  # fmt: skip
    jobs = [{**LISTERS[0], "each": [f"shop{i}" for i in range(60)]}]
    limits = {"requests": FAST, "in_flight": 4}
    providers = {"bulkgrid": {"api_key": "${BULKGRID_API_KEY}", "limits": limits}}
    outcome = run(tmp_path, manifest(tmp_path, jobs, providers=providers), sandbox,
                  env=fault_load.KEYS)  # fmt: skip
    books = outcome.books["bulkgrid"]
    assert outcome.code == 0, outcome.stderr
    assert len(books["submits"]) == 60
    assert set(books["submits"].values()) == {1}
    lost = sum(books["submits_lost"].values())
    assert lost >= 1
    assert books["requests"]["GET /api/v1/runs"] == lost  # one page each


def test_without_a_listing_a_5xx_leaves_the_job_unknown_unless_the_provider_says_refused(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    # Pulse 500 before the job exists: runner cannot tell, so submit_unknown (never re-sent).
    # Spidra 502 before the job exists: Spidra's own client re-sends, so runner does.
    sandbox = make_sandbox(scenario={"defaults": SHORT, "providers": {
        "pulse": {"error_burst": {"status": 500, "count": 1, "every": 3, "on": "submits"}},
        "spidra": {"error_burst": {"status": 502, "count": 1, "every": 3, "on": "submits"}},
    }})  # fmt: skip
    jobs = [
        {"id": "pu-{n}", "provider": "pulse", "type": "extract",
         "each": [f"doc{i}" for i in range(6)],
         "params": {"file_url": "https://files.example/{item}.pdf"}},
        {"id": "sp-{n}", "provider": "spidra", "type": "scrape",
         "each": [f"page{i}" for i in range(6)],
         "params": {"urls": [{"url": "https://{item}.example/"}], "output": "markdown"}},
    ]  # fmt: skip
    providers = {
        "pulse": {"api_key": "${PULSE_API_KEY}", "limits": {**LIMITS, "in_flight": 1}},
        "spidra": {"api_key": "${SPIDRA_API_KEY}", "limits": {**LIMITS, "in_flight": 1}},
    }
    outcome = run(tmp_path, manifest(tmp_path, jobs, providers=providers), sandbox,
                  env=fault_load.KEYS)  # fmt: skip
    states = outcome.states()
    pulse = outcome.books["pulse"]
    unknown = sorted(job for job, state in states.items() if state == "submit_unknown")
    assert unknown
    assert all(job.startswith("pu-") for job in unknown)
    assert len(unknown) == sum(pulse["submits_lost"].values())  # each truly never arrived
    assert len(pulse["submits"]) == 6 - len(unknown)
    spidra = outcome.books["spidra"]
    assert sum(spidra["submits_lost"].values()) >= 1
    assert len(spidra["submits"]) == 6
    assert set(spidra["submits"].values()) == {1}
    assert all(states[f"sp-{n}"] == "succeeded" for n in range(1, 7))


def test_load_with_faults_ends_every_job_consistent_with_the_books(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    path = fault_load.manifest(tmp_path, 300)
    sandbox = make_sandbox(scenario=fault_load.scenario())
    code, batch, books = run_load(tmp_path, path, sandbox)
    result = fault_load.check(path, batch, books)
    assert result.problems == []
    assert result.jobs == 300
    assert sum(result.states.values()) == 300
    assert result.injected > 0
    assert result.dropped > 0
    assert result.lost > 0
    assert result.throttled[fault_load.STORM] > 0  # the storm did happen
    assert code == (1 if result.unknown else 0)


def run_load(tmp: Path, path: Path, sandbox: RunningSandbox) -> tuple[int, Path, dict[str, Any]]:
    stderr = io.StringIO()
    code = run_batch(
        path, out=tmp / "results", sandbox=sandbox.origin, env=fault_load.KEYS, stderr=stderr
    )
    books = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]
    (batch,) = [p for p in (tmp / "results").glob("*/*") if p.name != "latest"]
    return code, batch, books


__all__ = ["FAST_POLL"]
