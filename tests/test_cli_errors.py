"""Failures outside the jobs: one line naming the thing and the fix, exit 2 (a path or URL
the user gave) or 3 (internal, naming where the traceback went), never a traceback."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runner.batch.usable import out_problem
from runner.cli import main

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = """\
version: 1
name: errs
providers:
  pulse: {api_key: "${PULSE_API_KEY}"}
jobs:
  - {id: p-1, provider: pulse, type: extract, params: {file_url: "https://x.example/a.pdf"}}
"""


@pytest.fixture
def manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PULSE_API_KEY", "pulse_errors_key")
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_out_under_a_regular_file_is_one_line_exit_2(
    tmp_path: Path, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "results"
    assert main(["run", str(manifest), "--sandbox", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"runner: --out {out}: {tmp_path / 'file'} is a file, not a directory; "
        "give --out a directory\n"
    )


def test_out_that_is_a_file_is_one_line_exit_2(
    tmp_path: Path, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "file"
    out.write_text("x")
    assert main(["run", str(manifest), "--sandbox", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"runner: --out {out}: {out} is a file, not a directory; give --out a directory\n"
    )


def test_out_under_a_file_from_a_real_process_has_no_traceback(
    tmp_path: Path, manifest: Path
) -> None:
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "results"
    done = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(manifest), "--sandbox", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PULSE_API_KEY": "k"},
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (errno.EACCES, "permission denied; give --out a directory you can write"),
        (errno.EPERM, "permission denied; give --out a directory you can write"),
        (errno.EROFS, "read-only file system; give --out a writable directory"),
        (errno.ENOSPC, "No space left on device; give --out another directory"),
    ],
)
def test_out_problems_name_the_cause_and_the_fix(code: int, expected: str) -> None:
    error = OSError(code, __import__("os").strerror(code), "/srv/results")
    assert out_problem(Path("/srv/results"), error) == f"--out /srv/results: {expected}"


def test_out_permission_denied_reaches_the_user_as_one_line(
    tmp_path: Path,
    manifest: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Tests run as root, where chmod does not bite: the OS's answer is simulated.
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "out"))

    monkeypatch.setattr(Path, "mkdir", denied)
    out = tmp_path / "out"
    assert main(["run", str(manifest), "--sandbox", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"runner: --out {out}: permission denied; give --out a directory you can write\n"
    )


def test_a_missing_manifest_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    for command in (["run", str(missing), "--out", str(tmp_path / "r")], ["plan", str(missing)]):
        assert main(command) == 2
        assert capsys.readouterr().err == (
            f"runner: {missing}: no such file; give the path of a manifest\n"
        )
    assert not (tmp_path / "r").exists()


def test_a_directory_given_as_manifest_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"runner: {tmp_path}: is a directory; give the path of a manifest\n"
    )


@pytest.mark.parametrize("command", ["resume", "status", "cancel", "verify"])
def test_a_dir_that_is_not_a_batch_is_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"runner: {tmp_path} is not a batch directory (no manifest.yaml); give "
        "results/<name>/<batch-id>, results/<name>/latest or results/<name>\n"
    )


@pytest.mark.parametrize("command", ["resume", "status", "cancel", "verify"])
def test_a_dir_that_does_not_exist_is_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "results" / "nightly"
    assert main([command, str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"runner: {missing}: no such directory; give "
        "results/<name>/<batch-id>, results/<name>/latest or results/<name>\n"
    )


def test_a_sandbox_url_that_does_not_answer_is_checked_before_anything_is_created(
    tmp_path: Path, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = closed_port()
    out = tmp_path / "out"
    url = f"http://127.0.0.1:{port}"
    assert main(["run", str(manifest), "--sandbox", url, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"runner: --sandbox {url}: no sandbox answers there (connection refused); "
        f"start one with: runner sandbox --port {port}\n"
    )
    assert not out.exists()


def test_a_url_that_is_not_a_sandbox_is_one_line(
    tmp_path: Path, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from starlette.applications import Starlette

    from runner.sandbox.server import serve_in_thread

    with serve_in_thread(Starlette()) as other:
        url = other.origin
        assert main(["run", str(manifest), "--sandbox", url, "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == (
        f"runner: --sandbox {url}: this is not a runner sandbox (GET /_sandbox/stats "
        "answered 404); give the URL `runner sandbox` printed\n"
    )
    assert not (tmp_path / "o").exists()


def test_an_unexpected_exception_is_one_line_naming_the_traceback_file(
    tmp_path: Path,
    manifest: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug with pulse_errors_key in it")

    monkeypatch.setattr("runner.commands.plan.estimate_plan", broken)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    assert main(["plan", str(manifest)]) == 3
    err = capsys.readouterr().err
    crash = next(tmp_path.glob("runner-crash-*.log"))
    assert err == (
        "runner: internal error: ZeroDivisionError: a bug with *** in it; "
        f"the traceback is in {crash}; please report it\n"
    )
    text = crash.read_text()
    assert "Traceback" in text
    assert "pulse_errors_key" not in text


def test_ctrl_c_before_a_batch_exists_is_one_line_exit_130(
    manifest: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("runner.commands.plan.estimate_plan", interrupted)
    assert main(["plan", str(manifest)]) == 130
    assert capsys.readouterr().err == "runner: interrupted\n"


def test_the_lock_message_never_prints_a_command_that_cannot_work() -> None:
    from runner.store.lock import Holder, held_message

    assert held_message("nightly", Holder()) == (
        "another run of 'nightly' is running (pid unknown, started unknown); "
        "wait for it to finish, then try again"
    )
