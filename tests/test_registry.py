"""The provider registry is the one list: the published manifest schema, the sandbox's
mounts and scenarios and the estimate agree with it, and nothing else names providers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from runner.manifest.schemas import MANIFEST_SCHEMA, manifest_schema, schema_dir
from runner.providers.registry import ADAPTERS, BUILT_IN, PROVIDERS, register
from runner.sandbox.app import api_class
from runner.sandbox.scenario import Scenario
from runner.sandbox.server import sandbox_base_urls

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["bulkgrid", "lobstr", "spidra", "skop", "pulse"]


def test_the_registry_lists_each_built_in_provider_once_with_its_adapter() -> None:
    assert list(PROVIDERS) == NAMES
    assert [adapter.info.name for adapter in BUILT_IN] == NAMES
    assert all(ADAPTERS[name].info is PROVIDERS[name] for name in NAMES)


def test_a_provider_is_registered_once() -> None:
    with pytest.raises(ValueError) as caught:
        register(ADAPTERS["pulse"])
    assert str(caught.value) == "provider 'pulse' is already registered"
    assert list(PROVIDERS) == NAMES


def test_the_published_manifest_schema_is_the_one_made_from_the_registry() -> None:
    # schemas/manifest.schema.json is a published contract: editors read the file, runner
    # reads the registry. After adding a provider, rewrite the file from manifest_schema().
    published = json.loads((schema_dir() / MANIFEST_SCHEMA).read_text(encoding="utf-8"))
    assert published == manifest_schema(PROVIDERS[name] for name in NAMES)


def test_every_provider_names_a_sandbox_api_mounted_where_its_real_api_lives() -> None:
    for info in PROVIDERS.values():
        api = api_class(info)
        assert api.name == info.name
        assert api.prefix == urlsplit(info.default_base_url).path.rstrip("/"), info.name
    assert sandbox_base_urls("http://127.0.0.1:9") == {
        "bulkgrid": "http://127.0.0.1:9",
        "lobstr": "http://127.0.0.1:9/v1",
        "spidra": "http://127.0.0.1:9/api",
        "skop": "http://127.0.0.1:9",
        "pulse": "http://127.0.0.1:9",
    }


def test_every_job_type_has_its_schema_file() -> None:
    for info in PROVIDERS.values():
        folder = info.schema_dir or schema_dir() / "providers"
        for kind in info.job_types:
            assert (folder / f"{info.name}.{kind}.schema.json").is_file(), (info.name, kind)


def test_a_scenario_knows_exactly_the_registered_providers() -> None:
    assert list(Scenario.from_dict({}).providers) == NAMES


@pytest.mark.parametrize(
    "module", ["runner/estimate.py", "runner/sandbox/app.py", "runner/sandbox/server.py",
               "runner/sandbox/scenario.py", "runner/sandbox/core.py", "runner/manifest/schemas.py",
               "runner/manifest/settings.py", "runner/manifest/loader.py", "runner/batch/run.py"],
)  # fmt: skip
def test_modules_that_serve_every_provider_name_none(module: str) -> None:
    source = (ROOT / module).read_text(encoding="utf-8")
    assert [name for name in NAMES if f'"{name}"' in source] == []


@pytest.mark.parametrize("name", NAMES)
def test_an_adapter_module_imports_alone_without_the_registry_or_the_sandbox(name: str) -> None:
    code = (
        f"import sys, runner.providers.{name}; "
        "print(sorted(m for m in sys.modules if m.startswith(('runner.providers.registry', "
        "'runner.sandbox', 'starlette'))))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert found.stdout == "[]\n"


def test_the_registry_loads_no_sandbox() -> None:
    code = (
        "import sys, runner.providers.registry; "
        "print(sorted(m for m in sys.modules if m.startswith(('runner.sandbox', 'starlette'))))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert found.stdout == "[]\n"
