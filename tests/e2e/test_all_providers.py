"""manifests/all-providers.yaml (what `make demo` runs) against the sandbox over real sockets:
every job of every type of all five providers succeeds, each submitted exactly once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from runner.sandbox.server import RunningSandbox
from tests.e2e.helpers import FAST_POLL, run, submits_once

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "manifests" / "all-providers.yaml"
KEYS = {
    "BULKGRID_API_KEY": "bg_live_demo",
    "LOBSTR_API_KEY": "lobstr-demo",
    "SPIDRA_API_KEY": "spd_demo",
    "SKOP_API_KEY": "sk-demo",
    "PULSE_API_KEY": "pulse_demo",
}
FAST = {"time_scale": 20, "defaults": {"duration": {"min": 1, "max": 2}}}
# Submit bodies per provider: the manifest's jobs after `each` expansion.
EXPECTED_SUBMITS = {"bulkgrid": 4, "lobstr": 1, "spidra": 4, "skop": 1, "pulse": 6}


def fast_copy(tmp: Path) -> Path:
    """The demo manifest with the same jobs, and only pacing changed: the published limits
    (Spidra's 300 per 15 min is one request every 3 s) and poll intervals made quick."""
    document = yaml.safe_load(DEMO.read_text())
    document["defaults"]["poll"] = FAST_POLL
    for settings in document["providers"].values():
        settings.pop("poll", None)
        settings["limits"] = {"requests": {"rate": 100, "per": "1s"}, "in_flight": 20}
    shutil.copytree(DEMO.parent / "data", tmp / "data")
    path = tmp / "all-providers.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_the_demo_manifest_uses_every_job_type_of_every_provider() -> None:
    from runner.providers.registry import ADAPTERS

    document = yaml.safe_load(DEMO.read_text())
    used = {(job["provider"], job["type"]) for job in document["jobs"]}
    every = {(name, kind) for name, a in ADAPTERS.items() for kind in a.info.job_types}
    assert used == every


@pytest.mark.sandbox(scenario=FAST)
def test_the_demo_manifest_succeeds_with_each_job_submitted_once(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    outcome = run(tmp_path, fast_copy(tmp_path), sandbox, env=KEYS)
    assert outcome.code == 0, outcome.stderr
    states = outcome.states()
    assert len(states) == 16
    assert set(states.values()) == {"succeeded"}, states
    for provider, count in EXPECTED_SUBMITS.items():
        submits_once(outcome.books, provider, count)
        # Exports, signed links, documents: no out-of-band file ever saw a key.
        assert outcome.books[provider]["keyed_downloads"] == 0, provider
    assert sum(outcome.books[p]["downloads"] for p in EXPECTED_SUBMITS) > 0
    assert (outcome.batch / "jobs" / "maps-restaurants" / "files" / "export.csv").exists()
    assert list((outcome.batch / "jobs" / "help-center" / "files").glob("page-*.md"))
    assert list((outcome.batch / "jobs" / "annual-reports" / "files").iterdir())
