"""Spend caps end to end over real sockets: `budget.jobs` (batch and provider) and a
provider's `budget.credits` stop new submits, let running jobs finish and skip the rest
(the sandbox's books count every submit); a plan that cannot fit is refused before a
request; each provider's own "no credits" answer stops that provider with one line."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from runner.batch.run import resume_batch, run_batch
from runner.cli import main
from runner.errors import UsageError
from runner.sandbox.server import RunningSandbox
from tests.conftest import MakeSandbox
from tests.e2e.helpers import lobstr_runs, manifest, pulse_jobs, sandbox_books

pytestmark = pytest.mark.e2e

ONE_AT_A_TIME = {"in_flight": 1}


def run(
    tmp: Path, path: Path, sandbox: RunningSandbox, env: dict[str, str], **options: Any
) -> tuple[int, str, Path | None]:
    stderr = io.StringIO()
    code = run_batch(
        path, out=tmp / "results", sandbox=sandbox.origin, env=env, stderr=stderr, **options
    )
    batches = [p for p in (tmp / "results").glob("*/*") if p.name != "latest"]
    return code, stderr.getvalue(), batches[0] if batches else None


def states(batch: Path) -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads((path / "job.json").read_text())
        for path in sorted((batch / "jobs").iterdir())
    }


def test_a_plan_over_its_job_cap_is_refused_before_any_request(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    sandbox = make_sandbox()
    path = manifest(tmp_path, [pulse_jobs(5)], providers={"pulse": {"api_key": "${PULSE_API_KEY}"}})
    path.write_text(path.read_text() + "budget: {jobs: 2}\n")
    env = {"PULSE_API_KEY": "pulse_test"}

    with pytest.raises(UsageError) as raised:
        run(tmp_path, path, sandbox, env)

    assert str(raised.value) == (
        f"{path}: budget.jobs: the batch has 5 jobs planned but a cap of 2; raise the cap, "
        "run fewer jobs (--only, --tag), or pass --allow-partial to submit 2 and skip the rest"
    )
    assert sandbox_books(sandbox, "pulse")["requests"] == {}
    assert not (tmp_path / "results" / "e2e").exists()


def test_the_batch_job_cap_submits_that_many_and_skips_the_rest(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    sandbox = make_sandbox()
    providers = {"pulse": {"api_key": "${PULSE_API_KEY}", "limits": ONE_AT_A_TIME}}
    path = manifest(tmp_path, [pulse_jobs(5)], providers=providers)
    path.write_text(path.read_text() + "budget: {jobs: 2}\n")
    env = {"PULSE_API_KEY": "pulse_test"}

    code, stderr, batch = run(tmp_path, path, sandbox, env, allow_partial=True)

    assert code == 1
    assert batch is not None
    jobs = states(batch)
    assert [j["state"] for j in jobs.values()].count("succeeded") == 2
    skipped = [j for j in jobs.values() if j["state"] == "skipped"]
    assert len(skipped) == 3
    reason = "budget: the batch reached its cap of 2 submitted jobs (budget.jobs); not submitted"
    assert {j["error"] for j in skipped} == {reason}
    assert len(sandbox_books(sandbox, "pulse")["submits"]) == 2
    assert (
        "runner: budget: the batch reached its cap of 2 submitted jobs (budget.jobs): "
        "3 not submitted, jobs already running continue" in stderr
    )
    info = json.loads((batch / "batch.json").read_text())
    assert (info["counts"], info["exit_code"]) == ({"skipped": 3, "succeeded": 2}, 1)

    # Resume keeps the cap (it is the batch's manifest): nothing more is sent.
    again = io.StringIO()
    assert resume_batch(batch, env=env, stderr=again) == 1
    assert len(sandbox_books(sandbox, "pulse")["submits"]) == 2
    assert [j["state"] for j in states(batch).values()].count("skipped") == 3


def test_a_provider_credit_cap_stops_its_submits_once_reported_cost_reaches_it(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    # Every run collects 2 results and costs 2 credits (credit_used); the cap is 3.
    sandbox = make_sandbox(scenario={"providers": {"lobstr": {"results": {"min": 2, "max": 2}}}})
    providers = {
        "lobstr": {
            "api_key": "${LOBSTR_API_KEY}",
            "limits": ONE_AT_A_TIME,
            "budget": {"credits": 3},
        },
        "pulse": {"api_key": "${PULSE_API_KEY}"},  # no cap: goes on regardless
    }
    runs = lobstr_runs(["a", "b", "c", "d"])
    path = manifest(tmp_path, [runs, pulse_jobs(2)], providers=providers)
    env = {"LOBSTR_API_KEY": "lobstr_test", "PULSE_API_KEY": "pulse_test"}

    code, stderr, batch = run(tmp_path, path, sandbox, env)

    assert code == 1
    assert batch is not None
    jobs = states(batch)
    spent = [
        j["credit_used"] for j in jobs.values() if j["provider"] == "lobstr" and "credit_used" in j
    ]
    assert spent == [2.0, 2.0]  # the second run took it past 3: the others were not sent
    assert {k: j["state"] for k, j in jobs.items()} == {
        "p-1": "succeeded",
        "p-2": "succeeded",
        "run-1": "succeeded",
        "run-2": "succeeded",
        "run-3": "skipped",
        "run-4": "skipped",
    }
    assert jobs["run-3"]["error"] == (
        "budget: lobstr reached its cap of 3 credits (4 reported; "
        "providers.lobstr.budget.credits); not submitted"
    )
    assert sandbox_books(sandbox, "lobstr")["requests"]["POST /v1/runs"] == 2
    assert stderr.count("runner: budget: lobstr reached its cap") == 1  # said once


NO_CREDITS = {
    "bulkgrid": (
        {"urls": ["https://a.example/"], "query": "plans", "schema": {"type": "object"}},
        "extract",
        "Bulkgrid: out of credits (HTTP 402 insufficient_credits)",
    ),
    "lobstr": (
        {
            "crawler": "google-maps-search-export",
            "params": {"language": "fr"},
            "tasks": [{"url": "https://maps.example/{item}"}],
        },
        "run",
        "Lobstr.io: out of credits (HTTP 400 NotEnoughBalance)",
    ),
    "spidra": (
        {"urls": [{"url": "https://{item}.example/"}], "prompt": "plans", "output": "json"},
        "scrape",
        "Spidra: out of credits (HTTP 403 FORBIDDEN)",
    ),
    "skop": (
        {"website": "https://{item}.example/", "prompt": "annual reports"},
        "scrape",
        "Skop: out of credits (HTTP 402 insufficient_credits)",
    ),
    "pulse": (
        {"file_url": "https://files.example/{item}.pdf"},
        "extract",
        "Pulse: out of credits (HTTP 402 BILLING_002)",
    ),
}


@pytest.mark.parametrize("provider", sorted(NO_CREDITS))
def test_each_providers_no_credit_answer_stops_it_for_the_batch_with_one_line(
    provider: str, tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    params, job_type, line = NO_CREDITS[provider]
    sandbox = make_sandbox(scenario={"providers": {provider: {"credits": 2}}})
    job = {
        "id": "j-{n}",
        "provider": provider,
        "type": job_type,
        "each": ["a", "b", "c", "d", "e"],
        "params": params,
    }
    providers = {provider: {"api_key": "${KEY}", "limits": ONE_AT_A_TIME}}
    path = manifest(tmp_path, [job], providers=providers)

    code, stderr, batch = run(tmp_path, path, sandbox, {"KEY": "test_key_1"})

    assert code == 1
    assert batch is not None
    ended = {k: j["state"] for k, j in states(batch).items()}
    assert ended == {
        "j-1": "succeeded",
        "j-2": "succeeded",
        "j-3": "skipped",
        "j-4": "skipped",
        "j-5": "skipped",
    }
    assert sandbox_books(sandbox, provider)["refused_credits"] == 1  # asked once, then stopped
    stopped = [
        line for line in stderr.splitlines() if line.startswith("runner: ") and "credits" in line
    ]
    assert stopped == [
        f"runner: {line}; stopped submitting {provider} jobs: 2 not submitted, "
        "jobs already running continue"
    ]


def test_runner_plan_shows_the_caps_and_refuses_a_plan_that_cannot_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    providers = {"pulse": {"api_key": "${PULSE_API_KEY}", "budget": {"jobs": 3}}}
    path = manifest(tmp_path, [pulse_jobs(4)], providers=providers)

    assert main(["plan", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "budget (jobs planned against each cap)\n" in out
    assert "  pulse: 4 jobs planned, cap 3 (DOES NOT FIT: 1 would be skipped)\n" in out
    assert err.splitlines()[-1] + "\n" == (
        f"runner: {path}: providers.pulse.budget.jobs: pulse has 4 jobs planned but a cap of "
        "3; raise the cap, run fewer jobs (--only, --tag), or pass --allow-partial to submit "
        "3 and skip the rest\n"
    )

    assert main(["plan", str(path), "--allow-partial", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["budget"] == {
        "credits": [],
        "jobs": [
            {
                "cap": 3,
                "fits": False,
                "key": "providers.pulse.budget.jobs",
                "planned": 4,
                "scope": "pulse",
            }
        ],
    }
