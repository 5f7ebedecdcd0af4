"""`resolve_batch_dir`: every DIR argument takes a batch, `results/<name>/latest` and
`results/<name>` (its latest batch)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from runner.cli import main
from runner.errors import NotABatchDirError
from runner.store.locate import resolve_batch_dir
from runner.store.results import BatchDir
from tests.test_results import END, START, make_plan


def finished(root: Path, hours: int = 0) -> BatchDir:
    plan = make_plan(1)
    batch = BatchDir.create(root, plan, now=START + timedelta(hours=hours))
    batch.finish(counts={}, exit_code=0, started=START, ended=END, argv=[], secrets=())
    return batch


def test_a_batch_directory_is_itself(tmp_path: Path) -> None:
    batch = finished(tmp_path)
    assert resolve_batch_dir(batch.path) == batch.path


def test_latest_and_the_name_directory_name_the_latest_finished_batch(tmp_path: Path) -> None:
    finished(tmp_path)
    second = finished(tmp_path, hours=24)
    BatchDir.create(tmp_path, make_plan(1), now=START - timedelta(hours=1))  # older, unfinished
    assert resolve_batch_dir(tmp_path / "nightly" / "latest") == second.path
    assert resolve_batch_dir(tmp_path / "nightly") == second.path


def test_without_latest_the_name_directory_names_the_newest_batch(tmp_path: Path) -> None:
    plan = make_plan(1)
    for _ in range(11):  # 20261122T030000Z, -2, ..., -11: numbers, not strings, decide
        newest = BatchDir.create(tmp_path, plan, now=START)
    BatchDir.create(tmp_path, plan, now=START - timedelta(days=1))
    assert newest.path.name == "20261122T030000Z-11"
    assert resolve_batch_dir(tmp_path / "nightly") == newest.path


def test_a_killed_newer_batch_is_what_the_name_directory_means(tmp_path: Path) -> None:
    # `latest` moves only when a batch finishes; a newer batch that was killed is the one
    # `runner resume results/<name>` must continue.
    finished(tmp_path)
    killed = BatchDir.create(tmp_path, make_plan(1), now=START + timedelta(hours=1))
    assert resolve_batch_dir(tmp_path / "nightly") == killed.path
    assert resolve_batch_dir(tmp_path / "nightly" / "latest").name == "20261122T030000Z"


def test_anything_else_is_not_a_batch(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotABatchDirError) as caught:
        resolve_batch_dir(tmp_path / "empty")
    assert str(caught.value) == (
        f"{tmp_path / 'empty'} is not a batch directory (no manifest.yaml); give "
        "results/<name>/<batch-id>, results/<name>/latest or results/<name>"
    )


def test_status_takes_the_name_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = finished(tmp_path)
    from runner.store.journal import Journal

    Journal.create(batch.journal_path, make_plan(1), batch.batch_id).close()
    assert main(["status", str(tmp_path / "nightly")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"{batch.path}: batch {batch.batch_id} of 'nightly', not running"
