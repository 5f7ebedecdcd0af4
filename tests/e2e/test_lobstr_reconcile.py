"""Lobstr's ambiguous submits against the sandbox over real sockets: a POST /runs whose answer
is lost is found again on the job's own squid (no clock involved), and one that provably
started nothing is sent again, without repeating the squid, configure or task steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.sandbox.server import RunningSandbox
from tests.e2e.helpers import manifest, run, submits_once

pytestmark = pytest.mark.e2e

FAST = {
    "requests": {"rate": 100, "per": "1s"},
    "submit": {"rate": 50, "per": "1s"},
    "status": {"rate": 50, "per": "1s"},
    "results": {"rate": 50, "per": "1s"},
    "in_flight": 4,
}
PROVIDERS = {"lobstr": {"api_key": "${LOBSTR_API_KEY}", "limits": FAST}}
KEYS = {"LOBSTR_API_KEY": "lobstr-e2e"}
JOB: dict[str, Any] = {
    "id": "maps",
    "provider": "lobstr",
    "type": "run",
    "params": {
        "crawler": "maps",
        "params": {"lang": "en"},
        "tasks": [{"url": "https://maps.example/1"}],
    },
}
# The fourth Lobstr request of the batch is POST /runs (squid, configure, tasks, run).
DROPPED_RUN = {  # seed 1906 drops exactly request #4 of the first 40, after it took effect
    "time_scale": 20,
    "providers": {"lobstr": {"duration": {"min": 1, "max": 2}, "drop_connection_rate": 0.2}},
}
LOST_RUN = {  # the same request #4 dropped, this time before it took any effect
    "time_scale": 20,
    "providers": {
        "lobstr": {
            "duration": {"min": 1, "max": 2},
            "drop_connection_rate": 0.2,
            "drop_after_accept": False,
        }
    },
}


def calls(books: dict[str, Any], label: str) -> int:
    return int(books["lobstr"]["requests"].get(label, 0))


@pytest.mark.sandbox(seed=1906, scenario=DROPPED_RUN)
def test_a_run_whose_answer_was_lost_is_found_on_the_jobs_own_squid(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    outcome = run(tmp_path, manifest(tmp_path, [JOB], providers=PROVIDERS), sandbox, env=KEYS)
    assert outcome.code == 0, outcome.stderr
    assert outcome.states() == {"maps": "succeeded"}
    books = outcome.books
    assert books["lobstr"]["dropped"] == 1
    submits_once(books, "lobstr", 1)  # the run started once, and was adopted
    assert calls(books, "POST /v1/runs") == 1
    assert calls(books, "GET /v1/runs") == 1  # the squid's run list, read once
    assert calls(books, "POST /v1/squids") == 1


@pytest.mark.sandbox(seed=1906, scenario=LOST_RUN)
def test_a_run_that_never_started_is_sent_again_without_repeating_steps(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    outcome = run(tmp_path, manifest(tmp_path, [JOB], providers=PROVIDERS), sandbox, env=KEYS)
    assert outcome.code == 0, outcome.stderr
    assert outcome.states() == {"maps": "succeeded"}
    books = outcome.books
    assert books["lobstr"]["dropped"] == 1
    submits_once(books, "lobstr", 1)  # one run exists
    assert calls(books, "POST /v1/runs") == 2  # the lost one, then the one that started it
    # The run list proved no run on the job's own squid (twice: reconcile, then the submit
    # looks once more before re-sending).
    assert calls(books, "GET /v1/runs") == 2
    assert calls(books, "POST /v1/squids") == 1
    assert calls(books, "POST /v1/squids/{squid}") == 1
    assert calls(books, "POST /v1/tasks") == 1
