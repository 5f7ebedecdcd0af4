"""Pulse end to end against the sandbox over real sockets: every job type, the single-use
large result, the `expired` status, and a 410 on a result already fetched."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from runner.errors import ErrorKind, ProviderCallError
from runner.http.backoff import RetryPolicy
from runner.http.client import ProviderClient, make_transport
from runner.http.limits import Gate
from runner.plan import JobSpec, Limits
from runner.providers import pulse
from runner.remote import RemoteState
from runner.sandbox.server import RunningSandbox
from runner.store.results import JobDir
from tests.conftest import MakeSandbox
from tests.e2e.helpers import manifest, run, submits_once

pytestmark = pytest.mark.e2e

PROVIDERS = {"pulse": {"api_key": "${PULSE_API_KEY}"}}
FAST = {"time_scale": 20, "providers": {"pulse": {"duration": {"min": 1, "max": 2}}}}
EXTRACTION = "7c1e5a0e-5f3b-4b7e-9d2a-0a1b2c3d4e5f"
JOBS: list[dict[str, Any]] = [
    {"id": "doc", "provider": "pulse", "type": "extract",
     "params": {"file_url": "https://files.example/a.pdf"}},
    {"id": "fields", "provider": "pulse", "type": "schema",
     "params": {"extraction_id": EXTRACTION, "schema_config": {"input_schema": {
         "type": "object", "properties": {"total": {"type": "number"}}}}}},
    {"id": "sections", "provider": "pulse", "type": "split",
     "params": {"extraction_id": EXTRACTION,
                "split_config": {"split_input": [{"name": "terms"}, {"name": "parties"}]}}},
    {"id": "tables", "provider": "pulse", "type": "tables",
     "params": {"extraction_id": EXTRACTION, "tables_config": {"merge": True}}},
]  # fmt: skip


def result(outcome: Any, job_id: str) -> Any:
    return json.loads((outcome.batch / "jobs" / job_id / "result.json").read_text())


@pytest.mark.sandbox(scenario=FAST)
def test_every_job_type_succeeds_with_its_own_result(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    outcome = run(tmp_path, manifest(tmp_path, JOBS, providers=PROVIDERS), sandbox)
    assert outcome.code == 0, outcome.stderr
    assert set(outcome.states().values()) == {"succeeded"}
    submits_once(outcome.books, "pulse", 4)
    requests = outcome.books["pulse"]["requests"]
    assert {k for k in requests if k.startswith("POST")} == {
        "POST /extract", "POST /schema", "POST /split", "POST /tables",
    }  # fmt: skip
    assert set(result(outcome, "fields")["schema_output"]) == {"total"}
    assert set(result(outcome, "sections")["split_output"]) == {"terms", "parties"}
    assert result(outcome, "tables")["tables_output"]
    # tables answered with tables_id, and that id was polled at /job/{id}.
    assert outcome.job("tables")["tables"] == len(result(outcome, "tables")["tables_output"])
    assert outcome.job("sections")["split_id"] == result(outcome, "sections")["split_id"]
    assert outcome.job("doc")["extraction_id"] == result(outcome, "doc")["extraction_id"]


LARGE = {
    "time_scale": 20,
    "providers": {"pulse": {"duration": {"min": 1, "max": 2}, "large_result_bytes": 100}},
}


@pytest.mark.sandbox(scenario=LARGE)
def test_a_large_result_is_downloaded_once_at_once(tmp_path: Path, sandbox: RunningSandbox) -> None:
    outcome = run(tmp_path, manifest(tmp_path, JOBS[:1], providers=PROVIDERS), sandbox)
    assert outcome.code == 0, outcome.stderr
    assert outcome.states() == {"doc": "succeeded"}
    out = outcome.batch / "jobs" / "doc"
    assert not (out / "result.json").exists()
    document = json.loads((out / "files" / "result.json").read_text())
    assert set(document) == {"extraction_id", "markdown", "page_count", "plan-info"}
    assert outcome.books["pulse"]["downloads"] == 1
    status = json.loads((out / "status.json").read_text())
    again = httpx.get(status["result"]["url"])  # single use: the runner had the one read
    assert again.status_code == 410
    job = outcome.job("doc")
    assert job["notes"] == ["large result downloaded to files/result.json"]
    assert job["result_bytes"] == (out / "files" / "result.json").stat().st_size


EXPIRING = {
    "time_scale": 20,
    "providers": {"pulse": {"duration": {"min": 1, "max": 2}, "expire_after": 0}},
}


@pytest.mark.sandbox(scenario=EXPIRING)
def test_an_expired_job_ends_expired_with_nothing_fetched(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    outcome = run(tmp_path, manifest(tmp_path, JOBS[:1], providers=PROVIDERS), sandbox)
    assert outcome.code != 0
    assert outcome.states() == {"doc": "expired"}
    job = outcome.job("doc")
    assert job["provider_status"] == "expired"
    assert job["results_ready"] is False
    assert not (outcome.batch / "jobs" / "doc" / "result.json").exists()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_result_already_fetched_is_gone_over_real_sockets(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    sandbox = make_sandbox(scenario=LARGE)
    client = ProviderClient(
        provider="pulse",
        base_url=sandbox.base_urls["pulse"],
        api_key="pulse-e2e",
        adapter=pulse.ADAPTER,
        gate=Gate("pulse", Limits(), pool_size=2),
        transport=make_transport(2),
        retry=RetryPolicy(attempts=2, base=0.001, cap=0.002),
        rng=random.Random(0),
    ).for_job("doc")
    spec = JobSpec("doc", "pulse", "extract", {"file_url": "https://files.example/a.pdf"})
    try:
        submitted = await pulse.ADAPTER.submit(client, spec)
        with anyio.fail_after(10):
            while (status := await pulse.ADAPTER.poll(client, spec, submitted.ref)).state in (
                RemoteState.QUEUED,
                RemoteState.RUNNING,
            ):
                await anyio.sleep(0.02)
        url = status.payload["result"]["url"]
        assert httpx.get(url).status_code == 200  # someone else had the single read
        with pytest.raises(ProviderCallError) as caught:
            await pulse.ADAPTER.fetch(client, spec, submitted.ref, status, JobDir(tmp_path, "doc"))
    finally:
        await client.transport.aclose()
    assert caught.value.kind is ErrorKind.GONE
    assert caught.value.status_code == 410
    assert not (tmp_path / "files" / "result.json").exists()
