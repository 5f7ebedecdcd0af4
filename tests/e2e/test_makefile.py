"""The README's Makefile, run by GNU make against the sandbox over real sockets: a second
`make` runs nothing, an edited job is the only one sent, `make refresh` sends nothing while
every result is younger than a week, and `make prune` keeps what it must."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runner.sandbox.server import RunningSandbox
from tests.e2e.helpers import manifest, pulse_jobs
from tests.e2e.test_incremental import rewrite, submit_counts

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed"),
]

ROOT = Path(__file__).resolve().parents[2]


def readme_makefile() -> str:
    text = (ROOT / "README.md").read_text("utf-8")
    blocks = re.findall(r"```make\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 1, "the README shows one Makefile"
    return blocks[0]


def make(project: Path, sandbox: RunningSandbox, *targets: str) -> str:
    done = subprocess.run(
        [
            "make",
            "--no-print-directory",
            f"RUNNER={sys.executable} -m runner",
            f"RUNFLAGS=--sandbox {sandbox.origin}",
            *targets,
        ],
        cwd=project,
        env={**os.environ, "PULSE_API_KEY": "pulse_test"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_readme_makefile_stays_incremental(tmp_path: Path, sandbox: RunningSandbox) -> None:
    project = tmp_path / "project"
    (project / "manifests").mkdir(parents=True)
    (project / "Makefile").write_text(readme_makefile())
    written = manifest(
        tmp_path, [pulse_jobs(2)], providers={"pulse": {"api_key": "${PULSE_API_KEY}"}}
    )
    path = project / "manifests" / "e2e.yaml"
    written.rename(path)
    batches = project / "results" / "e2e"

    make(project, sandbox)
    assert (project / "results" / "e2e.ok").is_file()
    assert submit_counts(sandbox, "pulse") == [1, 1]
    assert len(list(batches.glob("2*"))) == 1

    out = make(project, sandbox)
    assert "Nothing to be done for 'all'" in out
    assert len(list(batches.glob("2*"))) == 1  # runner was not even started

    rewrite(path, lambda d: d["jobs"][0]["each"].__setitem__(1, "doc-edited"))
    make(project, sandbox)
    assert submit_counts(sandbox, "pulse") == [1, 1, 1]  # the edited job alone
    assert len(list(batches.glob("2*"))) == 2

    make(project, sandbox, "refresh")  # every result is younger than 7d: all reused
    assert submit_counts(sandbox, "pulse") == [1, 1, 1]
    assert len(list(batches.glob("2*"))) == 3

    out = make(project, sandbox, "prune")
    assert "keeping 3, removing 0" in out
