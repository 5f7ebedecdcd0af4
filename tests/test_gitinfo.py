"""batch.json's `git`: the commit of the manifest's repository and whether its tree was
dirty, asked of the real `git` command; no git, no repository, no commit, or a git that
hangs are said so, never an error."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from runner.store.gitinfo import describe, git_info


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "manifests").mkdir(parents=True)
    git(root, "init", "-q")
    (root / "manifests" / "nightly.yaml").write_text("version: 1\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "first")
    return root


def test_a_clean_repository_gives_its_commit_and_not_dirty(repo: Path) -> None:
    info = git_info(repo / "manifests" / "nightly.yaml")
    assert info == {
        "repository": str(repo.resolve()),
        "commit": git(repo, "rev-parse", "HEAD"),
        "dirty": False,
        "manifest_path": "manifests/nightly.yaml",
        "manifest_status": "committed",
    }
    assert describe(info) == f"commit {info['commit'][:12]}"


def test_the_results_root_inside_the_repository_never_makes_it_dirty(repo: Path) -> None:
    out = repo / "results"
    (out / "nightly" / "20261202T000000Z").mkdir(parents=True)
    (out / "nightly" / "20261202T000000Z" / "batch.json").write_text("{}")
    (out / ".nightly.lock").write_text("")
    manifest = repo / "manifests" / "nightly.yaml"
    assert git_info(manifest, exclude=out)["dirty"] is False
    assert git_info(manifest)["dirty"] is True  # without the exclusion it would be


def test_a_changed_or_new_file_makes_it_dirty_and_the_manifest_says_how(repo: Path) -> None:
    manifest = repo / "manifests" / "nightly.yaml"
    manifest.write_text("version: 1\nname: x\n")
    info = git_info(manifest)
    assert (info["dirty"], info["manifest_status"]) == (True, "modified")
    assert describe(info).endswith(" (dirty)")
    git(repo, "checkout", "-q", "--", ".")
    other = repo / "manifests" / "weekly.yaml"
    other.write_text("version: 1\n")
    assert git_info(other)["dirty"] is True
    assert git_info(other)["manifest_status"] == "untracked"
    assert git_info(manifest)["manifest_status"] == "committed"


def test_outside_a_repository_it_says_so(tmp_path: Path) -> None:
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\n")
    info = git_info(manifest)
    assert info["commit"] is None
    assert info["dirty"] is None
    assert "is not in a git repository" in info["note"]
    assert describe(info).startswith("no commit (")


def test_a_repository_without_a_commit_says_so(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    manifest = tmp_path / "m.yaml"
    manifest.write_text("version: 1\n")
    info = git_info(manifest)
    assert (info["commit"], info["note"]) == (None, "the repository has no commit yet")


def test_no_git_installed_is_a_note(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    info = git_info(repo / "manifests" / "nightly.yaml")
    assert info == {"commit": None, "dirty": None, "note": "git is not installed"}


def test_a_git_that_hangs_is_given_up_after_the_timeout(tmp_path: Path, repo: Path) -> None:
    fake = tmp_path / "git"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    info = git_info(repo / "manifests" / "nightly.yaml", git=str(fake), timeout=0.2)
    assert info["commit"] is None
    assert "git did not answer" in info["note"]
