"""5xx bursts, dropped connections, jobs that outlive their timeout, a refused key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runner.sandbox.server import RunningSandbox
from tests.e2e.helpers import manifest, pulse_jobs, run, spidra_jobs, within_limit

pytestmark = pytest.mark.e2e

SHORT = {"duration": {"min": 0.05, "max": 0.2}}
REAL_LIMIT = {"rate_limit": {"requests": 50, "per": "1s"}}


def declared(**extra: object) -> dict[str, object]:
    limits = {"requests": {"rate": 50, "per": "1s"}}
    return {
        "spidra": {"api_key": "${SPIDRA_API_KEY}", "limits": limits, **extra},
        "pulse": {"api_key": "${PULSE_API_KEY}", "limits": limits, **extra},
    }


def accepted_once(outcome_books: dict[str, object], provider: str, accepted: int) -> None:
    books = outcome_books[provider]
    assert isinstance(books, dict)
    assert set(books["submits"].values()) <= {1}, books["submits"]  # never twice
    assert len(books["submits"]) >= accepted


BURSTS = {
    "defaults": SHORT,
    "providers": {
        "spidra": {**REAL_LIMIT, "error_burst": {"status": 500, "count": 1, "every": 4}},
        "pulse": {**REAL_LIMIT, "error_burst": {"status": 502, "count": 1, "every": 4}},
    },
}


@pytest.mark.sandbox(scenario=BURSTS)
def test_5xx_bursts_retry_polls_and_never_resend_a_submit(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    path = manifest(tmp_path, [spidra_jobs(8), pulse_jobs(8)], providers=declared())
    outcome = run(tmp_path, path, sandbox)
    states = outcome.states()
    assert set(states.values()) <= {"succeeded", "submit_unknown"}
    assert list(states.values()).count("succeeded") >= 8  # polls got through the bursts
    for provider in ("spidra", "pulse"):
        books = outcome.books[provider]
        assert books["errors_injected"] >= 3
        within_limit(outcome.books, provider)
        posts = sum(n for label, n in books["requests"].items() if label.startswith("POST"))
        assert posts == 8  # one POST per job, whatever came back
    unknown = [job for job, state in states.items() if state == "submit_unknown"]
    for job in unknown:
        assert outcome.job(job)["error"].startswith(
            "the submit may or may not have been accepted; not re-sent: "
        )
    assert outcome.code == (1 if unknown else 0)


BUSY = {
    "defaults": SHORT,
    "providers": {"spidra": {"error_burst": {"status": 503, "count": 1, "every": 6}}},
}


@pytest.mark.sandbox(scenario=BUSY)
def test_503_service_busy_is_not_accepted_and_is_retried(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    providers = {"spidra": {"api_key": "${SPIDRA_API_KEY}", "limits": {"requests": {"rate": 50}}}}
    path = manifest(tmp_path, [spidra_jobs(6)], providers=providers)
    outcome = run(tmp_path, path, sandbox)
    assert outcome.code == 0, outcome.stderr
    assert set(outcome.states().values()) == {"succeeded"}
    assert set(outcome.books["spidra"]["submits"].values()) == {1}
    assert len(outcome.books["spidra"]["submits"]) == 6


DROPS = {
    "defaults": {**SHORT, "drop_connection_rate": 0.2},
    "providers": {"spidra": REAL_LIMIT, "pulse": REAL_LIMIT},
}


@pytest.mark.sandbox(seed=3, scenario=DROPS)
def test_dropped_connections_never_double_submit(tmp_path: Path, sandbox: RunningSandbox) -> None:
    path = manifest(tmp_path, [spidra_jobs(10), pulse_jobs(10)], providers=declared())
    outcome = run(tmp_path, path, sandbox)
    states = outcome.states()
    assert set(states.values()) <= {"succeeded", "submit_unknown"}
    assert sum(b["dropped"] for b in outcome.books.values()) >= 2
    for provider in ("spidra", "pulse"):
        # a dropped submit created its job (drop_after_accept) and was not sent again
        assert set(outcome.books[provider]["submits"].values()) == {1}
        assert len(outcome.books[provider]["submits"]) == 10
        within_limit(outcome.books, provider)
    assert list(states.values()).count("succeeded") >= 10  # dropped polls were retried


SLOW = {"defaults": {"duration": {"min": 30, "max": 30}}}


@pytest.mark.sandbox(scenario=SLOW)
def test_jobs_that_outlive_their_timeout(tmp_path: Path, sandbox: RunningSandbox) -> None:
    providers = declared()
    providers["pulse"] = {**providers["pulse"], "on_timeout": "cancel"}  # type: ignore[dict-item]
    path = manifest(tmp_path, [spidra_jobs(2), pulse_jobs(3)], providers=providers, timeout="300ms")
    outcome = run(tmp_path, path, sandbox)
    assert outcome.code == 1
    assert set(outcome.states().values()) == {"timed_out"}
    # on a loaded machine the last poll may still be in flight at the timeout: both say so
    during = "( with a request still unanswered)?"
    assert re.fullmatch(
        rf"timed out after 0\.3s{during} \(left running remotely\)", outcome.job("s-1")["error"]
    )
    assert re.fullmatch(
        rf"timed out after 0\.3s{during} \(cancel requested remotely\)",
        outcome.job("p-1")["error"],
    )
    assert outcome.books["pulse"]["requests"]["DELETE /job/{job_id}"] == 3
    assert "DELETE" not in " ".join(outcome.books["spidra"]["requests"])


KEYS = {
    "defaults": SHORT,
    "providers": {"spidra": {"keys": ["spd_good"]}},
}


@pytest.mark.sandbox(scenario=KEYS)
def test_a_refused_key_stops_that_provider_with_one_message(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    providers = {
        "spidra": {"api_key": "${SPIDRA_API_KEY}", "limits": {"requests": {"rate": 5}}},
        "pulse": {"api_key": "${PULSE_API_KEY}"},
    }
    path = manifest(tmp_path, [spidra_jobs(10), pulse_jobs(2)], providers=providers)
    env = {"SPIDRA_API_KEY": "spd_wrong_key_123", "PULSE_API_KEY": "pulse_ok"}
    outcome = run(tmp_path, path, sandbox, env=env)
    assert outcome.code == 1
    states = outcome.states()
    assert {states[f"s-{i}"] for i in range(1, 11)} == {"skipped"}
    assert {states["p-1"], states["p-2"]} == {"succeeded"}  # the batch goes on
    # no hammering: one refused request, then nothing more
    assert outcome.books["spidra"]["requests"] == {"POST /api/scrape": 1}
    message = (
        "Spidra: the API key in $SPIDRA_API_KEY was refused (HTTP 401); stopped all spidra jobs"
    )
    assert outcome.stderr.count("API key") == 1 + 10  # the notice, and each skipped job
    assert f"runner: {message}: 10 skipped, 0 in flight marked failed\n" in outcome.stderr
    assert outcome.job("s-3")["error"] == message
    assert "spd_wrong_key_123" not in outcome.stderr
    assert "spd_wrong_key_123" not in (outcome.batch / "batch.json").read_text()
