"""A 429 storm (limit declared above the real one) and the pending-job cap converge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.sandbox.server import RunningSandbox
from tests.e2e.helpers import manifest, pulse_jobs, run, spidra_jobs, submits_once, within_limit

pytestmark = pytest.mark.e2e

STORM = {
    "defaults": {"duration": {"min": 0.05, "max": 0.2}},
    "providers": {
        "spidra": {"rate_limit": {"requests": 10, "per": "1s"}},
        "pulse": {"rate_limit": {"requests": 10, "per": "1s"}},
    },
}
OVERDECLARED = {
    name: {
        "api_key": f"${{{name.upper()}_API_KEY}}",
        "limits": {"requests": {"rate": 60, "per": "1s"}, "in_flight": 20},
    }
    for name in ("spidra", "pulse")
}


@pytest.mark.sandbox(scenario=STORM)
def test_a_429_storm_converges_and_every_job_is_submitted_once(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    """Pulse sends no quota headers: only 429 + Retry-After tell the runner it is too fast."""
    path = manifest(tmp_path, [pulse_jobs(12)], providers={"pulse": OVERDECLARED["pulse"]})
    outcome = run(tmp_path, path, sandbox)
    assert outcome.code == 0, outcome.stderr
    assert set(outcome.states().values()) == {"succeeded"}
    submits_once(outcome.books, "pulse", 12)
    books = outcome.books["pulse"]
    assert books["throttled"] >= 1  # the limit really was lower than declared
    # Each 429 pauses the whole provider for Retry-After and halves the rate: a handful of
    # refusals, not a storm of retries (every job needs >= 2 requests).
    assert books["throttled"] <= 6
    assert sum(books["requests"].values()) - books["throttled"] <= 12 * 6
    # Each new provider-wide pause is in the log, with what caused it.
    events = [json.loads(line) for line in (outcome.batch / "log.jsonl").read_text().splitlines()]
    paused = [e for e in events if e["event"] == "provider.paused"]
    assert 1 <= len(paused) <= books["throttled"]
    assert all(e["provider"] == "pulse" and "HTTP 429" in e["reason"] for e in paused)


@pytest.mark.sandbox(scenario=STORM)
def test_quota_headers_keep_an_overdeclared_limit_without_a_single_429(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    """Spidra sends RateLimit-Remaining/-Reset on every reply: an empty quota pauses the
    provider before the next request, so the over-declared rate never reaches it."""
    path = manifest(tmp_path, [spidra_jobs(12)], providers={"spidra": OVERDECLARED["spidra"]})
    outcome = run(tmp_path, path, sandbox)
    assert outcome.code == 0, outcome.stderr
    submits_once(outcome.books, "spidra", 12)
    within_limit(outcome.books, "spidra")


PENDING = {
    "defaults": {"duration": {"min": 0.1, "max": 0.3}},
    "providers": {"spidra": {"pending_limits": {"scrape": 3}}},
}


@pytest.mark.sandbox(scenario=PENDING)
def test_too_many_pending_jobs_is_learned_not_resubmitted_blindly(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    providers = {
        "spidra": {
            "api_key": "${SPIDRA_API_KEY}",
            "limits": {"requests": {"rate": 100, "per": "1s"}, "in_flight": 10},
        }
    }
    path = manifest(tmp_path, [spidra_jobs(9)], providers=providers)
    outcome = run(tmp_path, path, sandbox)
    assert outcome.code == 0, outcome.stderr
    assert set(outcome.states().values()) == {"succeeded"}
    # refused submits created nothing; each job was accepted exactly once
    submits_once(outcome.books, "spidra", 9)
    refused = outcome.books["spidra"]["requests"]["POST /api/scrape"] - 9
    assert 1 <= refused <= 3  # learned the cap after the first refusal
