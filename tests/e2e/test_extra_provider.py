"""A sixth provider, added as the README says (an adapter module, its job-type schema, its
sandbox module, this test) and registered with one `register(...)` line: it validates, is
estimated, and runs submit → poll → result against its own sandbox API over real sockets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.errors import ManifestError
from runner.estimate import assumptions, estimate_plan
from runner.manifest.loader import parse_manifest
from runner.providers.registry import register, unregister
from tests.conftest import MakeSandbox
from tests.e2e import echo_provider
from tests.e2e.helpers import manifest, run, submits_once

pytestmark = pytest.mark.e2e

KEYS = {"ECHO_API_KEY": "echo-test-key"}
PROVIDERS = {"echo": {"api_key": "${ECHO_API_KEY}"}}
JOBS = [{"id": "say-{n}", "provider": "echo", "type": "run", "each": ["hello", "world"],
         "params": {"text": "{item}"}}]  # fmt: skip


@pytest.fixture
def echo() -> Iterator[None]:
    register(echo_provider.ADAPTER)  # the one registration line
    yield
    unregister("echo")


def test_a_registered_provider_runs_a_job_end_to_end(
    echo: None, tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    # The scenario knows the provider too: it is a sandbox provider like the others.
    scenario = {"time_scale": 20, "providers": {"echo": {"duration": {"min": 1, "max": 2}}}}
    sandbox = make_sandbox(scenario=scenario)
    assert sandbox.base_urls["echo"] == f"{sandbox.origin}/echo"  # mounted at its prefix

    outcome = run(tmp_path, manifest(tmp_path, JOBS, providers=PROVIDERS), sandbox, env=KEYS)

    assert outcome.code == 0, outcome.stderr
    assert outcome.states() == {"say-1": "succeeded", "say-2": "succeeded"}
    for job_id, text in (("say-1", "hello"), ("say-2", "world")):
        result = json.loads((outcome.batch / "jobs" / job_id / "result.json").read_text())
        assert result == {"echo": text}
    submits_once(outcome.books, "echo", 2)
    requests: dict[str, Any] = outcome.books["echo"]["requests"]
    assert requests["POST /echo/jobs"] == 2
    assert requests["GET /echo/jobs/{job_id}/result"] == 2
    assert requests["GET /echo/jobs/{job_id}"] >= 2  # at least the poll that saw it done


def parse(jobs: list[dict[str, Any]]) -> Any:
    document = {"version": 1, "name": "echo", "providers": PROVIDERS, "jobs": jobs}
    return parse_manifest(json.dumps(document).encode(), source=Path("m.yaml"), env=KEYS)


def test_a_registered_provider_validates_with_its_own_job_type_schema(echo: None) -> None:
    plan = parse(JOBS).plan
    assert [(job.id, job.provider, job.params) for job in plan.jobs] == [
        ("say-1", "echo", {"text": "hello"}),
        ("say-2", "echo", {"text": "world"}),
    ]
    with pytest.raises(ManifestError) as caught:
        parse([{"id": "x", "provider": "echo", "type": "run", "params": {"txt": "hi"}}])
    assert [p.message for p in caught.value.problems] == [
        "missing required key 'text'",
        "unknown key 'txt'; did you mean 'text'?",
    ]


def test_the_estimate_uses_the_registered_providers_rules(echo: None) -> None:
    estimate = estimate_plan(parse(JOBS).plan)
    (echo_estimate,) = estimate.providers
    assert (echo_estimate.submits, echo_estimate.results) == (2, 2)
    assert echo_estimate.typical_duration == 10.0
    assert "echo: results are one request" in assumptions()
    assert assumptions()[-1].endswith(", echo 10s")


def test_an_unregistered_provider_is_unknown_again() -> None:
    with pytest.raises(ManifestError) as caught:
        parse(JOBS)
    messages = [p.message for p in caught.value.problems]
    assert messages[0] == (
        "unknown provider 'echo' (valid: bulkgrid, lobstr, spidra, skop, pulse)"
    ), messages
