"""The pure parts of `runner prune` (which batches stay, and why) and `runner diff` (where
two requests differ), and prune's refusal to touch what runner did not name."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from runner.cli import main
from runner.commands.diff import changed_paths
from runner.commands.prune import Verdict, decide
from runner.store.locate import batches_in, is_batch_name


def names(*ids: str) -> list[Path]:
    return [Path("results/x") / i for i in ids]


def kept(verdicts: list[Verdict]) -> dict[str, list[str]]:
    return {v.path.name: v.reasons for v in verdicts if v.kept}


def test_the_newest_n_stay_and_the_rest_go() -> None:
    batches = names("20261205T000000Z", "20261204T000000Z", "20261203T000000Z")
    verdicts = decide(batches, 2, "20261205T000000Z", {})
    assert kept(verdicts) == {
        "20261205T000000Z": ["among the newest 2 (--keep 2)", "latest"],
        "20261204T000000Z": ["among the newest 2 (--keep 2)"],
    }
    assert [v.path.name for v in verdicts] == [p.name for p in batches]  # newest first
    assert kept(decide(batches, 5, None, {})).keys() == {p.name for p in batches}


def test_sources_are_kept_and_their_sources_in_turn() -> None:
    d, c, b, a = names("d", "c", "b", "a")
    sources = {"d": {"c": 2}, "c": {"a": 1, "b": 1}, "b": {"a": 3}}
    verdicts = decide([d, c, b, a], 1, None, sources)
    assert kept(verdicts) == {
        "d": ["among the newest 1 (--keep 1)"],
        "c": ["reused by d (2 jobs)"],
        "a": ["reused by c (1 job)", "reused by b (3 jobs)"],
        "b": ["reused by c (1 job)"],
    }


def test_latest_stays_and_what_a_removed_batch_reused_may_go() -> None:
    c, b, a = names("c", "b", "a")
    verdicts = decide([c, b, a], 1, "a", {"b": {"a": 1}, "a": {"gone": 1}})
    assert kept(verdicts) == {"c": ["among the newest 1 (--keep 1)"], "a": ["latest"]}


def test_changed_paths_names_every_difference_by_its_path() -> None:
    old = {"params": {"urls": [{"url": "a"}, {"url": "b"}], "prompt": "p"}, "fetch": {}}
    new = {"params": {"urls": [{"url": "a"}, {"url": "c"}], "output": "json"}, "fetch": {"x": 1}}
    assert changed_paths(old, new) == [
        "fetch.x",
        "params.output",
        "params.prompt",
        "params.urls[1].url",
    ]
    assert changed_paths({"l": [1]}, {"l": [1, 2]}) == ["l"]
    assert changed_paths(old, old) == []


def test_prune_leaves_alone_what_runner_did_not_name(tmp_path: Path) -> None:
    root = tmp_path / "results" / "x"
    (root / "my-notes").mkdir(parents=True)
    (root / "my-notes" / "manifest.yaml").write_text("version: 1\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["prune", str(root), "--keep", "1"]) == 2
    assert err.getvalue() == f"runner: {root} holds no batches; give results/<name>\n"
    assert (root / "my-notes" / "manifest.yaml").is_file()
    assert not (tmp_path / "results" / ".x.lock").exists()


def test_shard_batches_sort_by_their_start_and_pinned_ones_keep_their_sources(
    tmp_path: Path,
) -> None:
    root = tmp_path / "x"
    ids = [
        "20261203T000000Z",
        "20261204T000000Z-s1of2",
        "20261204T000000Z-s2of2",
        "20261204T000000Z-s2of2-2",
        "20261205T000000Z",
        "20261205T000000Z-2",
    ]
    for name in ids:
        (root / name).mkdir(parents=True)
        (root / name / "manifest.yaml").write_text("version: 1\n")
    assert all(is_batch_name(name) for name in ids)
    assert not is_batch_name("20261204T000000Z-sxof2")
    assert [p.name for p in batches_in(root)] == [
        "20261205T000000Z-2",
        "20261205T000000Z",
        "20261204T000000Z-s2of2-2",
        "20261204T000000Z-s2of2",
        "20261204T000000Z-s1of2",
        "20261203T000000Z",
    ]
    c, b, a = names("c", "b-s1of2", "a")
    verdicts = decide([c, b, a], 1, None, {"b-s1of2": {"a": 2}}, {"b-s1of2": "shard 1/2 running"})
    assert kept(verdicts) == {
        "c": ["among the newest 1 (--keep 1)"],
        "b-s1of2": ["shard 1/2 running"],
        "a": ["reused by b-s1of2 (2 jobs)"],
    }
