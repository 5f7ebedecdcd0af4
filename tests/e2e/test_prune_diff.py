"""`runner prune` and `runner diff` over real batches made against the sandbox, and the
git record in batch.json: prune keeps the newest N, `latest` and every batch a kept batch
reuses files from, never runs beside a run; diff names the jobs added, removed, changed in
what they asked and in their results."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from runner.batch.reuse import Policy
from runner.cli import main
from runner.sandbox.server import RunningSandbox
from runner.store import lock
from runner.store.results import point_latest
from tests.conftest import MakeSandbox
from tests.e2e.helpers import manifest, pulse_jobs
from tests.e2e.test_incremental import captured, outcome, rewrite, run_again, submit_counts
from tests.test_gitinfo import git

pytestmark = pytest.mark.e2e

PROVIDERS = {"pulse": {"api_key": "${PULSE_API_KEY}"}}


def four_batches(tmp: Path, sandbox: RunningSandbox) -> tuple[Path, list[Path]]:
    """b1 sends both jobs; b2 reuses both from b1; b3 sends p-1 again (--force p-1) and
    reuses p-2 from b1; b4 reuses p-1 from b3 and p-2 from b1."""
    path = manifest(tmp, [pulse_jobs(2)], providers=PROVIDERS)
    made = [run_again(tmp, path, sandbox)[2]]
    made.append(run_again(tmp, path, sandbox)[2])
    made.append(run_again(tmp, path, sandbox, Policy(force=frozenset({"p-1"})))[2])
    made.append(run_again(tmp, path, sandbox)[2])
    b1, _, b3, b4 = made
    assert outcome(b4, "p-1")["reused_from"]["batch"] == b3.name
    assert outcome(b4, "p-2")["reused_from"]["batch"] == b1.name
    return path, made


def prune(*args: str) -> tuple[int, str, str]:
    with captured() as (out, err):
        code = main(["prune", *args])
    return code, out.getvalue(), err.getvalue()


def test_prune_keeps_the_newest_latest_and_every_batch_they_reuse(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    path, (b1, b2, b3, b4) = four_batches(tmp_path, sandbox)
    directory = b1.parent

    code, out, _ = prune(str(directory), "--keep", "1", "--dry-run")
    assert code == 0
    width = max(len(b.name) for b in (b1, b2, b3, b4))
    assert out.splitlines() == [
        f"runner: prune {directory}: 4 batches; keeping 3, would remove 1 "
        "(dry run: nothing removed)",
        f"  keep    {b4.name.ljust(width)}  among the newest 1 (--keep 1), latest",
        f"  keep    {b3.name.ljust(width)}  reused by {b4.name} (1 job)",
        f"  would remove  {b2.name}",
        f"  keep    {b1.name.ljust(width)}  "
        f"reused by {b4.name} (1 job), reused by {b3.name} (1 job)",
    ]
    assert all(b.is_dir() for b in (b1, b2, b3, b4))

    code, out, _ = prune(str(directory), "--keep", "1")
    assert code == 0
    assert f"  remove  {b2.name}" in out
    assert not b2.exists()
    assert all(b.is_dir() for b in (b1, b3, b4))
    # What is left verifies, and every reused_from still names a batch on disk.
    for batch in (b1, b3, b4):
        with captured():
            assert main(["verify", str(batch)]) == 0
    for job in ("p-1", "p-2"):
        assert (directory / outcome(b4, job)["reused_from"]["batch"]).is_dir()
    # And the next run still reuses both, sending nothing.
    before = submit_counts(sandbox, "pulse")
    _, _, b5 = run_again(tmp_path, path, sandbox)
    assert submit_counts(sandbox, "pulse") == before
    assert {outcome(b5, j)["reused_from"]["batch"] for j in ("p-1", "p-2")} == {b3.name, b1.name}


def test_prune_never_removes_the_latest_target(tmp_path: Path, sandbox: RunningSandbox) -> None:
    path = manifest(tmp_path, [pulse_jobs(1)], providers=PROVIDERS)
    first = run_again(tmp_path, path, sandbox, None)[2]
    second = run_again(tmp_path, path, sandbox, None)[2]
    third = run_again(tmp_path, path, sandbox, None)[2]
    point_latest(first)  # as after a newer run was killed before it finished
    code, out, _ = prune(str(first.parent), "--keep", "1")
    assert code == 0
    width = max(len(b.name) for b in (first, second, third))
    assert f"  keep    {first.name.ljust(width)}  latest" in out
    assert (first.is_dir(), second.exists(), third.is_dir()) == (True, False, True)


def test_prune_never_runs_beside_a_run_and_refuses_what_is_not_a_results_directory(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    _, batches = four_batches(tmp_path, sandbox)
    directory = batches[0].parent
    with lock.acquire(tmp_path / "results", "e2e") as held:
        held.note_batch(batches[-1].name)
        code, out, err = prune(str(directory), "--keep", "1")
    assert code == 4
    assert f"another run of 'e2e' is running (pid {os.getpid()}" in err
    assert out == ""
    assert all(b.is_dir() for b in batches)

    code, _, err = prune(str(batches[0]), "--keep", "1")
    assert code == 2
    assert f"runner: {batches[0]} is a batch; give the manifest's results directory" in err
    code, _, err = prune(str(directory), "--keep", "0")
    assert (code, err) == (2, "runner: --keep 0: keep at least 1 batch\n")
    assert all(b.is_dir() for b in batches)


def test_diff_names_jobs_added_removed_changed_and_results_changed(
    tmp_path: Path, sandbox: RunningSandbox, make_sandbox: MakeSandbox
) -> None:
    git(tmp_path, "init", "-q")
    path = manifest(tmp_path, [pulse_jobs(3)], providers=PROVIDERS)
    git(tmp_path, "add", "manifest.yaml")
    git(tmp_path, "commit", "-q", "-m", "three invoices")
    commit = git(tmp_path, "rev-parse", "HEAD")
    _, _, a = run_again(tmp_path, path, sandbox)
    info = json.loads((a / "batch.json").read_text())
    assert info["git"]["commit"] == commit
    assert info["git"]["dirty"] is False  # results/ inside the repository does not count
    assert info["git"]["manifest_status"] == "committed"

    def change(document: dict[str, Any]) -> None:
        document["jobs"][0]["each"] = ["doc0", "doc-new", "doc2", "doc3"]  # p-2 changed, p-4 new

    rewrite(path, change)
    # p-3 sent again to a sandbox of another seed: the same request, another answer.
    other = make_sandbox(seed=7)
    _, _, b = run_again(tmp_path, path, other, Policy(force=frozenset({"p-3"})))
    info = json.loads((b / "batch.json").read_text())
    assert (info["git"]["commit"], info["git"]["dirty"]) == (commit, True)
    assert info["git"]["manifest_status"] == "modified"
    assert outcome(b, "p-1")["reused_from"]["batch"] == a.name

    with captured() as (out, _):
        assert main(["diff", str(a), str(b)]) == 0
    text = out.getvalue()
    assert text.splitlines()[:2] == [
        f"A {a.name}  commit {commit[:12]}  ({a})",
        f"B {b.name}  commit {commit[:12]} (dirty)  ({b})",
    ]
    assert "jobs: 1 added, 0 removed, 1 changed in what they asked, 2 unchanged" in text
    assert "  + p-4  pulse extract" in text
    assert "  ~ p-2  params.file_url" in text
    assert "results: 2 changed" in text
    assert "  ~ p-3  changed: " in text
    assert "  ~ p-1" not in text  # reused: the very same files

    with captured() as (out, _):
        assert main(["diff", str(a), str(b), "--json", "--exit-code"]) == 1
    document = json.loads(out.getvalue())
    assert [j["id"] for j in document["added"]] == ["p-4"]
    assert document["removed"] == []
    assert [(c["id"], c["fields"]) for c in document["changed"]] == [("p-2", ["params.file_url"])]
    assert {r["id"] for r in document["results"]} == {"p-2", "p-3"}
    assert document["a"]["git"]["commit"] == commit
    assert document["same"] is False

    # B against itself: nothing differs; the other way round, p-4 was removed.
    with captured() as (out, _):
        assert main(["diff", str(b), str(b / ".." / "latest"), "--exit-code"]) == 0
    assert "jobs: 0 added, 0 removed, 0 changed in what they asked, 4 unchanged" in out.getvalue()
    with captured() as (out, _):
        assert main(["diff", str(b), str(a), "--json"]) == 0
    assert [j["id"] for j in json.loads(out.getvalue())["removed"]] == ["p-4"]


def test_a_manifest_outside_git_is_said_so_in_batch_json(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    path = manifest(tmp_path, [pulse_jobs(1)], providers=PROVIDERS)
    _, _, batch = run_again(tmp_path, path, sandbox)
    record = json.loads((batch / "batch.json").read_text())["git"]
    assert (record["commit"], record["dirty"]) == (None, None)
    assert "is not in a git repository" in record["note"]
