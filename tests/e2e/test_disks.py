"""Real disks that fail under a real `runner run` subprocess: a tmpfs that fills up (during a
result write, a journal write, a log write, before the run), one remounted read-only, and a
per-file size limit (RLIMIT_FSIZE, no mount needed). Each ends in one line naming the path,
the journal intact, and `runner resume DIR` finishing the batch once there is room."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from runner.sandbox.app import create_app
from runner.sandbox.scenario import Scenario
from runner.sandbox.server import RunningSandbox, serve_in_thread
from runner.store.journal import Journal

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PULSE_API_KEY": "pulse_disk_key"}
POLL = {"initial": "50ms", "max": "100ms", "multiplier": 1.5}
JOBS = 4


class Disk:
    """A small tmpfs of our own: filled, freed, grown and remounted read-only on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def mount(self, *options: str) -> None:
        # A process that just exited may still hold its files for a moment (the kernel
        # closes them after the exit is reported), and a read-only remount is then refused
        # as busy: try again for a few seconds before giving up.
        command = ["mount", "-o", ",".join(("remount", *options)), str(self.path)]
        for _ in range(50):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode == 0 or "busy" not in done.stderr.lower():
                break
            time.sleep(0.1)
        if done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr)

    def fill(self) -> None:
        """Write the filler until the kernel says ENOSPC: the disk is full."""
        refused: int | None = None
        with self.filler.open("ab", buffering=0) as handle:
            while refused is None:
                try:
                    handle.write(b"\0" * 4096)
                except OSError as exc:
                    refused = exc.errno
        assert refused == errno.ENOSPC

    def free(self) -> None:
        self.filler.unlink()


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs at `path`; the reason it cannot be done, or None."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    return None if done.returncode == 0 else (done.stderr.strip() or "mount failed")


@pytest.fixture
def make_disk(tmp_path: Path) -> Iterator[Callable[[str], Disk]]:
    mounted: list[Path] = []

    def make(size: str) -> Disk:
        path = tmp_path / f"disk-{len(mounted)}"
        why = _mount_tmpfs(path, size)
        if why is not None:
            pytest.skip(f"cannot mount a tmpfs here ({why}); test_rlimit_* covers a full disk")
        mounted.append(path)
        return Disk(path)

    yield make
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def _manifest(tmp: Path, name: str = "disk") -> Path:
    document = {
        "version": 1,
        "name": name,
        "defaults": {"timeout": "60s", "poll": POLL},
        "providers": {
            "pulse": {"api_key": "${PULSE_API_KEY}", "limits": {"requests": {"rate": 100}}}
        },
        "jobs": [
            {
                "id": "p-{n}",
                "provider": "pulse",
                "type": "extract",
                "each": [f"d{i}" for i in range(JOBS)],
                "params": {"file_url": "https://files.example/{item}.pdf"},
            }
        ],
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _sandbox(scenario: dict[str, Any]) -> Any:
    return serve_in_thread(create_app(seed=7, scenario=Scenario.from_dict(scenario)))


def _start(args: list[str], *, fsize: int | None = None) -> subprocess.Popen[str]:
    def limit() -> None:  # in the child: a per-file size limit, EFBIG instead of SIGXFSZ
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        assert fsize is not None
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args, "--quiet"],
        cwd=ROOT,
        env={**os.environ, **ENV},
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit if fsize is not None else None,
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, list[str]]:
    _, err = process.communicate(timeout=60)
    return process.returncode, err.splitlines()


def _batch(out: Path, name: str = "disk") -> Path:
    found = [p for p in (out / name).iterdir() if p.name != "latest"]
    assert len(found) == 1, found
    return found[0]


def _wait_until_submitted(out: Path) -> Path:
    """The batch directory once the journal holds a remote id for every job."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        batches = list((out / "disk").glob("2*")) if (out / "disk").is_dir() else []
        journal_path = batches[0] / "journal.sqlite" if batches else None
        if journal_path is not None and journal_path.is_file():
            try:
                with Journal.open(journal_path, readonly=True) as journal:
                    if len(journal.remote_ids()) == JOBS:
                        return batches[0]
            except Exception:  # created a moment ago, not readable yet: look again
                pass
        time.sleep(0.02)
    raise AssertionError("the jobs were not submitted within 30 s")


def _resume_completes(batch: Path, sandbox: RunningSandbox) -> None:
    """`runner resume DIR` once there is room: exit 0, every job succeeded, each submitted
    to the provider exactly once over both runs, and the sealed batch verifies."""
    code, err = _finish(_start(["resume", str(batch)]))
    assert code == 0, err
    states = {
        p.name: json.loads((p / "job.json").read_text())["state"]
        for p in (batch / "jobs").iterdir()
    }
    assert states == {f"p-{n}": "succeeded" for n in range(1, JOBS + 1)}
    books = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]["pulse"]
    assert len(books["submits"]) == JOBS
    assert set(books["submits"].values()) == {1}
    verify = subprocess.run(
        [sys.executable, "-m", "runner", "verify", str(batch)], cwd=ROOT, capture_output=True
    )
    assert verify.returncode == 0, verify.stdout
    for line in (batch / "log.jsonl").read_text().splitlines():  # whole lines only
        json.loads(line)


def _one_line(err: list[str], path: Path, remedy: str, batch: Path) -> None:
    """Exactly one line from the failure on (the sandbox notice aside): the path, the reason,
    what to do, and the command that continues."""
    lines = [line for line in err if not line.startswith("runner: notice:")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"runner: cannot write {path}: "), err
    assert lines[0].endswith(f"; {remedy}, then: runner resume {batch}"), err
    assert "Traceback" not in "\n".join(err)


def _names_a_result(line: str, batch: Path, reason: str) -> None:
    """The line names a job's result file (Pulse's status.json carries the result inline)."""
    pattern = (
        rf"runner: cannot write {re.escape(str(batch))}/jobs/p-[1-4]/(status|result)\.json: "
        rf"{reason}; free space, then: runner resume {re.escape(str(batch))}"
    )
    assert re.fullmatch(pattern, line), line


# -- full disks ------------------------------------------------------------------------------

SLOW = {"defaults": {"duration": {"min": 3.0, "max": 4.0}}}


def test_full_disk_during_a_journal_write_then_resume(
    tmp_path: Path, make_disk: Callable[[str], Disk]
) -> None:
    disk = make_disk("8m")
    with _sandbox(SLOW) as sandbox:
        process = _start(
            ["run", str(_manifest(tmp_path)), "--sandbox", sandbox.origin, "--out", str(disk.path)]
        )
        batch = _wait_until_submitted(disk.path)
        # log.jsonl gets its room in advance, so the journal is the first write refused
        subprocess.run(["fallocate", "-n", "-l", "2M", str(batch / "log.jsonl")], check=True)
        disk.fill()
        code, err = _finish(process)
        assert code == 3
        _one_line(err, batch / "journal.sqlite", "free space", batch)
        log = [json.loads(line) for line in (batch / "log.jsonl").read_text().splitlines()]
        assert log[-1]["event"] == "batch.store_error"
        assert log[-1]["error"].startswith(f"cannot write {batch / 'journal.sqlite'}: ")
        disk.free()
        _resume_completes(batch, sandbox)


def test_full_disk_during_a_log_write_then_resume(
    tmp_path: Path, make_disk: Callable[[str], Disk]
) -> None:
    disk = make_disk("16m")
    with _sandbox(SLOW) as sandbox:
        process = _start(
            ["run", str(_manifest(tmp_path)), "--sandbox", sandbox.origin, "--out", str(disk.path)]
        )
        batch = _wait_until_submitted(disk.path)
        # the journal gets its room in advance, so log.jsonl is the first write refused
        for name in ("journal.sqlite", "journal.sqlite-wal"):
            subprocess.run(["fallocate", "-n", "-l", "4M", str(batch / name)], check=True)
        disk.fill()
        code, err = _finish(process)
        assert code == 3
        _one_line(err, batch / "log.jsonl", "free space", batch)
        disk.free()
        _resume_completes(batch, sandbox)


BIG = {"defaults": {"duration": {"min": 0.3, "max": 1.0}, "result_bytes": 400_000}}


def test_full_disk_during_a_result_write_then_resume(
    tmp_path: Path, make_disk: Callable[[str], Disk]
) -> None:
    disk = make_disk("1200k")  # room for the batch and two results of ~400 kB, not four
    with _sandbox(BIG) as sandbox:
        args = ["run", str(_manifest(tmp_path)), "--sandbox", sandbox.origin]
        code, err = _finish(_start([*args, "--out", str(disk.path)]))
        batch = _batch(disk.path)
        assert code == 3
        lines = [line for line in err if not line.startswith("runner: notice:")]
        assert len(lines) == 1, err
        _names_a_result(lines[0], batch, "No space left on device")
        with Journal.open(batch / "journal.sqlite", readonly=True) as journal:
            assert len(journal.remote_ids()) == JOBS  # every submit kept
        disk.mount("size=16m")
        _resume_completes(batch, sandbox)


def test_full_disk_before_the_run_names_the_lock_and_sends_nothing(
    tmp_path: Path, make_disk: Callable[[str], Disk]
) -> None:
    disk = make_disk("512k")
    disk.fill()
    with _sandbox({}) as sandbox:
        args = [
            "run",
            str(_manifest(tmp_path)),
            "--sandbox",
            sandbox.origin,
            "--out",
            str(disk.path),
        ]
        code, err = _finish(_start(args))
        assert code == 3
        assert err[-1] == (
            f"runner: cannot write {disk.path / '.disk.lock'}: No space left on device; "
            "free space, then run the same command again"
        )
        books = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]["pulse"]
        assert books["submits"] == {}
        disk.free()
        code, err = _finish(_start(args))
        assert code == 0, err


# -- read-only -------------------------------------------------------------------------------


def test_a_read_only_out_is_one_line_exit_2_before_anything_is_sent(
    tmp_path: Path, make_disk: Callable[[str], Disk]
) -> None:
    disk = make_disk("512k")
    disk.mount("ro")
    with _sandbox({}) as sandbox:
        out = disk.path / "results"
        args = ["run", str(_manifest(tmp_path)), "--sandbox", sandbox.origin, "--out", str(out)]
        code, err = _finish(_start(args))
        assert code == 2
        assert err[-1] == (
            f"runner: --out {out}: read-only file system; give --out a writable directory"
        )
        books = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]["pulse"]
        assert books["requests"] == {}


def test_a_batch_on_a_disk_remounted_read_only_is_one_line_exit_2_then_resumes(
    tmp_path: Path, make_disk: Callable[[str], Disk]
) -> None:
    # Linux refuses to remount read-only under a process writing there, so the run is
    # stopped first (SIGTERM: detach, state saved), as a remount by an operator would be.
    disk = make_disk("8m")
    with _sandbox(SLOW) as sandbox:
        args = ["run", str(_manifest(tmp_path)), "--sandbox", sandbox.origin]
        process = _start([*args, "--out", str(disk.path)])
        batch = _wait_until_submitted(disk.path)
        process.send_signal(signal.SIGTERM)
        assert _finish(process)[0] == 143
        disk.mount("ro")
        code, err = _finish(_start(["resume", str(batch)]))
        assert code == 2
        assert err == [
            f"runner: {disk.path / '.disk.lock'}: Read-only file system; "
            "check that path and its permissions"
        ]
        disk.mount("rw")
        _resume_completes(batch, sandbox)


# -- no mount needed: a per-file size limit ----------------------------------------------------


def test_rlimit_a_result_past_the_file_size_limit_then_resume(tmp_path: Path) -> None:
    out = tmp_path / f"results-{uuid.uuid4().hex[:6]}"
    with _sandbox(BIG) as sandbox:
        args = ["run", str(_manifest(tmp_path)), "--sandbox", sandbox.origin, "--out", str(out)]
        code, err = _finish(_start(args, fsize=300_000))  # results ~400 kB, the rest smaller
        batch = _batch(out)
        assert code == 3
        lines = [line for line in err if not line.startswith("runner: notice:")]
        assert len(lines) == 1, err
        _names_a_result(lines[0], batch, "File too large")
        _resume_completes(batch, sandbox)
