"""The report as a person sees it: a real sandbox batch (127.0.0.1) with failures, its
report.html opened in headless Chromium (Debian's `chromium`, which .ci/run installs), and
the rendered page read back: providers, job ids, failure reasons, the charts."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from runner.cli import main
from runner.report.page import REPORT
from runner.sandbox.server import RunningSandbox
from tests.e2e.helpers import manifest, pulse_jobs, spidra_jobs

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCENARIO = {
    "time_scale": 1.0,
    "defaults": {"duration": {"min": 0.05, "max": 0.4}},
    "providers": {"pulse": {"fail_rate": 0.5}},
}


def render(page: Path, profile: Path) -> str:
    """The DOM after Chromium has loaded and laid out the page (no network: --dump-dom of
    a file:// URL)."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # root in CI containers
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--dump-dom",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def visible_text(dom: str) -> str:
    without_style = re.sub(r"<style>.*?</style>", "", dom, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", without_style))


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y --no-install-recommends chromium; "
    ".ci/run installs it): the report was not rendered",
)
@pytest.mark.sandbox(seed=11, scenario=SCENARIO)
def test_headless_chromium_shows_providers_jobs_failures_and_charts(
    tmp_path: Path, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPIDRA_API_KEY", "spd_test")
    monkeypatch.setenv("PULSE_API_KEY", "pulse_test")
    path = manifest(tmp_path, [spidra_jobs(3), pulse_jobs(6)])
    out = tmp_path / "results"
    code = main(["run", str(path), "--out", str(out), "--sandbox", sandbox.origin, "--report"])
    (batch,) = [p for p in out.glob("*/*") if p.name != "latest"]
    jobs = {p.name: json.loads((p / "job.json").read_text()) for p in (batch / "jobs").iterdir()}
    failed = {k: v for k, v in jobs.items() if v["state"] == "failed"}
    assert code == 1
    assert failed

    dom = render(batch / REPORT, tmp_path / "profile")
    text = visible_text(dom)
    assert "Summary" in text
    assert "Timeline" in text
    assert "Load per provider" in text
    for provider in ("spidra", "pulse"):
        assert re.search(rf"\b{provider}\b", text)
    for job_id in jobs:
        assert re.search(rf"\b{re.escape(job_id)}\b", text), job_id
    assert f"Jobs that did not succeed ({len(failed)})" in text
    for job_id, doc in failed.items():
        assert doc["reason"] in text  # the provider's words, on the page
        assert f'href="jobs/{job_id}/job.json"' in dom  # a link to its job.json
    # The charts were parsed as SVG: two per provider, bars and lines inside.
    assert dom.count("<svg") == 4
    assert len(re.findall(r'<rect[^>]*class="job"', dom)) == len(jobs)
    assert 'class="rate"' in dom
    assert 'class="inflight"' in dom
    assert 'class="limit"' in dom
