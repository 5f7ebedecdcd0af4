"""What the benchmarks share to run processes: a `runner sandbox` subprocess, CPU pinning
and a scratch directory in RAM."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pinned(cpu: int) -> list[str]:
    """`taskset -c CPU` where taskset exists: sandbox and runner on different cores."""
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and os.cpu_count() else []


def scratch() -> str | None:
    """Results go to RAM when possible: on this VM's /tmp a file create costs ~0.7 ms of CPU
    (vs 0.025 ms on /work), which would measure the disk, not the runner."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


@contextlib.contextmanager
def sandbox_process(scenario: Path, *options: str) -> Iterator[str]:
    """A `runner sandbox` on a free port (pinned to CPU 1) serving `scenario`; yields its
    origin (Pulse is mounted there) and stops it afterwards."""
    command = [*pinned(1), sys.executable, "-m", "runner", "sandbox", "--port", "0"]
    command += ["--scenario", str(scenario), *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        urls = dict(process.stdout.readline().split() for _ in range(5))
        yield urls["pulse"]
    finally:
        process.terminate()
        process.wait(timeout=30)
