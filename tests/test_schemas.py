"""The published schemas: one per job type, valid 2020-12, shipped in the wheel, and every
manifest in manifests/ passes both the loader and the schema an editor sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema_rs
import pytest
import yaml
from jsonschema import Draft202012Validator

from runner.manifest.loader import load_manifest
from runner.manifest.schemas import (
    did_you_mean,
    fetch_defaults,
    full_manifest_validator,
    job_type_checker,
    manifest_checker,
    schema_dir,
)
from runner.providers.registry import PROVIDERS

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "manifests").glob("*.yaml"))
SCHEMAS = sorted((ROOT / "schemas").rglob("*.schema.json"))
KEYS = {info.api_key_env: "test-key" for info in PROVIDERS.values()}


def test_there_is_one_schema_per_provider_job_type() -> None:
    expected = {f"{p}.{t}.schema.json" for p, info in PROVIDERS.items() for t in info.job_types}
    assert {p.name for p in (ROOT / "schemas" / "providers").glob("*.json")} == expected


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_every_schema_is_valid_draft_2020_12(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    if path.name == "manifest.schema.json":
        manifest_checker()  # its relative refs resolve only in a registry; the loader strips them
    else:
        jsonschema_rs.validator_for(schema)  # the fast validator compiles it too


def test_the_repository_schemas_are_used_from_a_checkout() -> None:
    assert schema_dir() == ROOT / "schemas"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_in_manifests_validates(path: Path) -> None:
    loaded = load_manifest(path, env=KEYS)
    assert loaded.plan.jobs
    assert not [n for n in loaded.notices if "not set" in n]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_editors_see_the_same_verdict(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    errors = list(full_manifest_validator().iter_errors(document))
    assert errors == []


def test_the_published_schema_checks_params_through_its_provider_refs() -> None:
    document = {
        "version": 1,
        "name": "x",
        "providers": {"spidra": {"api_key": "${K}"}},
        "jobs": [
            {"id": "a", "provider": "spidra", "type": "scrape", "params": {"urls": []}},
            {
                "id": "b-{n}",
                "provider": "spidra",
                "type": "scrape",
                "each": ["x"],
                "params": {"urls": "{item}"},
            },
        ],
    }
    errors = list(full_manifest_validator().iter_errors(document))
    # job b has `each`, so its params are checked after expansion, not by the editor
    assert [(list(e.absolute_path), e.validator) for e in errors] == [
        (["jobs", 0, "params", "urls"], "minItems")
    ]


@pytest.mark.parametrize(
    ("provider", "job_type", "params", "valid"),
    [
        ("spidra", "scrape", {"urls": [{"url": "https://a.example"}] * 3}, True),
        ("spidra", "scrape", {"urls": [{"url": "https://a.example"}] * 4}, False),
        ("spidra", "batch", {"urls": ["https://a.example"] * 50}, True),
        ("spidra", "batch", {"urls": ["https://a.example"] * 51}, False),
        ("spidra", "crawl", {"baseUrl": "https://a.example", "maxPages": 5}, True),
        ("spidra", "crawl", {"maxPages": 5}, False),
        ("skop", "scrape", {"website": "https://a.example", "prompt": "x" * 10}, True),
        ("skop", "scrape", {"website": "https://a.example", "prompt": "x" * 9}, False),
        ("skop", "scrape", {"website": "https://a.example", "prompt": "x" * 501}, False),
        (
            "skop",
            "scrape",
            {
                "website": "https://a.example",
                "prompt": "x" * 10,
                "parameters": {"timeout": 3600, "max_file_size_mb": 1},
            },
            True,
        ),
        (
            "skop",
            "scrape",
            {"website": "https://a.example", "prompt": "x" * 10, "parameters": {"timeout": 3601}},
            False,
        ),
        ("pulse", "extract", {"file_url": "https://a.example/x.pdf"}, True),
        ("pulse", "extract", {"file_url": "ftp://a.example/x.pdf"}, False),
        ("pulse", "extract", {"pages": "1-2"}, False),
        ("pulse", "extract", {"file_url": "https://a.example/x.pdf", "async": True}, True),
        ("pulse", "schema", {"extraction_id": "e", "schema_config": {"input_schema": {}}}, True),
        (
            "pulse",
            "schema",
            {"extraction_id": "e", "split_id": "s", "schema_config_id": "c"},
            False,
        ),
        (
            "pulse",
            "split",
            {"extraction_id": "e", "split_config": {"split_input": [{"name": "a"}]}},
            True,
        ),
        ("pulse", "tables", {"extraction_id": "e", "tables_config": {"merge": True}}, True),
        ("lobstr", "run", {"squid": "0123456789abcdef0123456789abcdef"}, True),
        ("lobstr", "run", {"crawler": "c", "tasks": [{"url": "https://a.example"}]}, True),
        ("lobstr", "run", {"crawler": "c"}, False),
        ("lobstr", "run", {"crawler": "c", "tasks": [{"url": "x"}], "concurrency": 21}, False),
        ("bulkgrid", "extract", {"urls": ["https://a.example"], "query": "q", "schema": {}}, True),
        ("bulkgrid", "crawl", {"urls": ["https://a.example"], "strategy": "bfs"}, False),
        ("bulkgrid", "deep_crawl", {"url": "https://a.example", "config": {"maxPages": 3}}, True),
        ("bulkgrid", "map", {"url": "https://a.example", "config": {"limit": 0}}, False),
    ],
)
def test_job_type_schemas_follow_the_wire_contracts(
    provider: str, job_type: str, params: dict[str, object], valid: bool
) -> None:
    checker = job_type_checker(provider, job_type)
    assert checker.is_valid({"params": params}) is valid
    assert (checker.findings({"params": params}) == []) is valid  # both validators agree


def test_fetch_defaults_are_read_from_the_schemas() -> None:
    assert fetch_defaults("lobstr", "run") == {"results": True, "export": False}
    assert fetch_defaults("skop", "scrape") == {"documents": True, "min_confidence": 0}
    assert fetch_defaults("bulkgrid", "crawl") == {"content": ["markdown"], "screenshots": False}
    assert fetch_defaults("pulse", "extract") == {}


def test_did_you_mean() -> None:
    assert did_you_mean("timout", ["timeout", "tags"]) == "; did you mean 'timeout'?"
    assert did_you_mean("url", ["file_url", "pages"]) == "; did you mean 'file_url'?"
    assert did_you_mean("zzz", ["timeout"]) == ""


def test_the_wheel_ships_the_schemas_and_an_installed_runner_uses_them(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("runner-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    assert "runner/schemas/manifest.schema.json" in names
    assert "runner/schemas/providers/spidra.scrape.schema.json" in names
    probe = (
        "from runner.manifest.schemas import schema_dir, job_type_checker; "
        "print(schema_dir()); print(job_type_checker('spidra', 'batch').is_valid({'params': {}}))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    ran = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [str(tmp_path / "site" / "runner" / "schemas"), "False"]
