"""The overlap lock: exclusive across processes, named holder, freed when the holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runner.errors import LockHeldError
from runner.store.lock import Holder, acquire, lock_path, probe

HOLDER_SCRIPT = """
import sys
from datetime import datetime, timezone
from pathlib import Path
from runner.store.lock import acquire
lock = acquire(Path(sys.argv[1]), "nightly", now=datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc))
lock.note_batch("20261122T030000Z")
print("held", flush=True)
sys.stdin.read()  # hold until killed
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "held\n"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_second_holder_is_refused_with_pid_and_start_time(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(LockHeldError) as info:
        acquire(tmp_path, "nightly")
    assert str(info.value) == (
        f"another run of 'nightly' is running (pid {holder.pid}, started 2026-11-22T03:00:00Z);"
        f" wait for it to finish, or stop it with: kill {holder.pid}"
    )
    assert probe(tmp_path, "nightly") == Holder(
        pid=holder.pid, started="2026-11-22T03:00:00Z", batch_id="20261122T030000Z"
    )


def test_lock_is_free_once_the_holder_is_killed(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert probe(tmp_path, "nightly") is None
    with acquire(tmp_path, "nightly") as lock:
        assert lock.held
        assert probe(tmp_path, "nightly") == Holder(
            pid=os.getpid(), started=lock.started.strftime("%Y-%m-%dT%H:%M:%SZ")
        )


def test_release_frees_the_lock_and_clears_the_holder(tmp_path: Path) -> None:
    lock = acquire(tmp_path, "nightly", now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert lock_path(tmp_path, "nightly").read_text() == (
        f"pid={os.getpid()}\nstarted=2026-01-02T03:04:05Z\n"
    )
    with pytest.raises(LockHeldError):
        acquire(tmp_path, "nightly")  # even from the same process
    lock.release()
    lock.release()  # idempotent
    assert not lock.held
    assert lock_path(tmp_path, "nightly").read_text() == ""
    acquire(tmp_path, "nightly").release()


def test_locks_are_per_manifest_name(tmp_path: Path) -> None:
    with acquire(tmp_path, "nightly"), acquire(tmp_path, "weekly") as other:
        assert other.held
    assert probe(tmp_path, "never-run") is None
