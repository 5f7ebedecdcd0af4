"""batch.json and job.json details the mutation run (make mutate) found unguarded: every
field batch.json records, what Endpoints reads back from it, the installed dependencies it
lists, and the normalized job.json fields a provider's extras never override."""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from runner import __version__
from runner.lifecycle import JobRecord, State
from runner.providers.base import FetchReport
from runner.results import BatchDir, Endpoints, dependency_versions, outcome_document
from tests.test_results import END, MANIFEST, START, make_plan


def _info(batch: BatchDir) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((batch.path / "batch.json").read_text("utf-8"))
    return document


def test_batch_json_at_creation_has_null_end_fields_and_says_where_it_ran(
    tmp_path: Path,
) -> None:
    plan = make_plan()
    batch = BatchDir.create(tmp_path, plan, now=START)
    batch.write_info(
        started=START,
        argv=["runner", "run", "--key", "sk-live-SECRET"],
        secrets=["sk-live-SECRET"],
        endpoints=Endpoints({"spidra": "http://127.0.0.1:9/spidra"}, "in-process"),
    )
    assert _info(batch) == {
        "batch_id": "20261122T030000Z",
        "name": "nightly",
        "manifest_sha256": hashlib.sha256(MANIFEST).hexdigest(),
        "runner_version": __version__,
        "python": sys.version.split()[0],
        "dependencies": dependency_versions(),
        "argv": ["runner", "run", "--key", "***"],
        "started": "2026-11-22T03:00:00Z",
        "ended": None,
        "counts": None,
        "exit_code": None,
        "remote_ids": {},
        "inputs": {},
        "endpoints": {"spidra": "http://127.0.0.1:9/spidra"},
        "sandbox": "in-process",
    }


def test_batch_json_when_sealed_keeps_the_endpoints_it_recorded(tmp_path: Path) -> None:
    plan = make_plan()
    batch = BatchDir.create(tmp_path, plan, now=START)
    batch.write_info(
        started=START,
        argv=[],
        secrets=[],
        endpoints=Endpoints({"spidra": "http://127.0.0.1:9/spidra"}, "http://127.0.0.1:9"),
    )
    batch.finish(
        counts={"succeeded": 2},
        exit_code=0,
        started=START,
        ended=END,
        argv=["runner", "run"],
        secrets=plan.secrets,
        remote_ids={"job-0": "r-0"},
    )
    info = _info(batch)
    assert (info["ended"], info["counts"], info["exit_code"], info["remote_ids"]) == (
        "2026-11-22T03:05:07Z",
        {"succeeded": 2},
        0,
        {"job-0": "r-0"},
    )
    assert Endpoints.from_info(info) == Endpoints(
        {"spidra": "http://127.0.0.1:9/spidra"}, "http://127.0.0.1:9"
    )


@pytest.mark.parametrize(
    "document",
    [
        None,
        {},
        {"endpoints": ["http://a"], "sandbox": 3},
        {"endpoints": {"spidra": 3}},
        {"endpoints": {1: "http://a"}},
    ],
)
def test_endpoints_read_nothing_from_a_batch_json_that_recorded_nothing_usable(
    document: dict[Any, Any] | None,
) -> None:
    assert Endpoints.from_info(document) == Endpoints({}, None)


def test_endpoints_keep_good_urls_even_when_the_sandbox_entry_is_unusable() -> None:
    document = {"endpoints": {"a": "http://a", "b": "http://b"}, "sandbox": ["x"]}
    assert Endpoints.from_info(document) == Endpoints({"a": "http://a", "b": "http://b"})


def test_dependencies_are_the_core_requirements_by_lowercase_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requires = {
        "runner": [
            "PyYAML>=6.0",
            "httpx[http2]>=0.27",
            "pytest>=8; extra == 'dev'",
            ">=1.0 nameless",
            "Gone-Package>=1",
        ]
    }
    versions = {"PyYAML": "6.0.2", "httpx": "0.28.1", "pytest": "8.0"}

    def fake_requires(name: str) -> list[str]:
        return requires[name]

    def fake_version(name: str) -> str:
        if name not in versions:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(metadata, "requires", fake_requires)
    monkeypatch.setattr(metadata, "version", fake_version)
    assert dependency_versions() == {
        "pyyaml": "6.0.2",
        "httpx": "0.28.1",
        "gone-package": "missing",
    }


def test_no_dependencies_are_listed_when_runner_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> list[str]:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "requires", not_installed)
    assert dependency_versions() == {}


def test_the_installed_runner_lists_its_dependencies() -> None:
    found = dependency_versions()
    assert found["pyyaml"] == metadata.version("pyyaml")
    assert all(name == name.lower() for name in found)


def test_job_json_without_a_report_counts_what_is_on_disk_or_nothing() -> None:
    spec = make_plan().jobs[0]
    record = JobRecord(
        spec=spec, state=State.FAILED, raw_status="error", reason="E42", error="it broke"
    )
    assert outcome_document(record, None) == {
        "id": "job-0",
        "provider": "spidra",
        "type": "scrape",
        "tags": ["pricing"],
        "state": "failed",
        "provider_status": "error",
        "reason": "E42",
        "progress": None,
        "partial": False,
        "results_ready": True,
        "counts": {"items": 0, "files": 0},
        "notes": [],
        "error": "it broke",
    }


def test_job_json_extras_never_override_normalized_fields_and_partial_is_either() -> None:
    spec = make_plan().jobs[1]
    record = JobRecord(spec=spec, state=State.SUCCEEDED, progress=1.0, attempt=3)
    report = FetchReport(
        items=5,
        files=1,
        partial=True,
        notes=("2 pages skipped",),
        outcome={"cost": 2, "id": "evil", "state": "failed"},
    )
    document = outcome_document(record, report)
    assert document == {
        "cost": 2,
        "id": "job-1",
        "provider": "spidra",
        "type": "scrape",
        "tags": ["pricing"],
        "state": "succeeded",
        "provider_status": None,
        "reason": None,
        "progress": 1.0,
        "partial": True,
        "results_ready": True,
        "counts": {"items": 5, "files": 1},
        "notes": ["2 pages skipped"],
        "error": None,
        "attempt": 3,
        "previous_attempts": ["attempts/job-1/1", "attempts/job-1/2"],
    }
    record.partial = True
    assert outcome_document(record, FetchReport())["partial"] is True


def test_job_json_of_a_first_attempt_names_no_attempts(tmp_path: Path) -> None:
    spec = make_plan().jobs[0]
    batch = BatchDir.create(tmp_path, make_plan(), now=datetime(2026, 1, 1, tzinfo=UTC))
    job = batch.job_dir(spec.id)
    job.append_item({"n": 1})
    job.append_item({"n": 2})
    document = outcome_document(JobRecord(spec=spec, state=State.SUCCEEDED), None, job)
    assert document["counts"] == {"items": 2, "files": 0}
    assert "attempt" not in document
    assert "previous_attempts" not in document
