"""Where a manifest stands in git: the commit of its repository and whether the tree was
dirty, for batch.json. Asks the `git` command (no library), with a timeout; no git, not a
repository, or a git that hangs is said so in the record, never an error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

GIT_TIMEOUT = 5.0  # seconds per git call: a hung network filesystem must not hold a run


def _git(args: list[str], cwd: Path, git: str, timeout: float) -> str | None:
    """git's stdout, stripped, or None when it fails, times out or cannot be run."""
    # GIT_OPTIONAL_LOCKS=0: `git status` must not take the index lock (a concurrent
    # `git commit` of the user's would fail on it); prompts are never answered.
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0", "GIT_TERMINAL_PROMPT": "0"}
    try:
        done = subprocess.run(
            [git, *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode(
        "utf-8", errors="replace"
    ).rstrip()  # porcelain lines start with a space


def git_info(
    manifest: Path,
    *,
    exclude: Path | None = None,
    git: str | None = None,
    timeout: float = GIT_TIMEOUT,
) -> dict[str, Any]:
    """batch.json's `git`: `{"commit", "dirty", "manifest_path", "manifest_status"}` when the
    manifest is in a repository, else `{"commit": None, "dirty": None, "note": why}`.
    `dirty` is true when any tracked file differs from the commit or an untracked file
    exists, outside `exclude` (the results root: a run's own output never makes the tree
    dirty); `manifest_status` says whether the manifest itself is committed as run."""
    found = git or shutil.which("git")
    if found is None:
        return _none("git is not installed")
    where = manifest.resolve().parent
    if not where.is_dir():
        return _none(f"{where} is not a directory")
    top = _git(["rev-parse", "--show-toplevel"], where, found, timeout)
    if top is None:
        return _none(f"{where} is not in a git repository (or git did not answer)")
    commit = _git(["rev-parse", "--verify", "--quiet", "HEAD"], where, found, timeout)
    if commit is None:
        return {**_none("the repository has no commit yet"), "repository": top}
    spec = ["--", "."]
    skipped = _relative(exclude.resolve(), Path(top)) if exclude is not None else None
    if skipped and skipped != ".":
        spec.append(f":(exclude){skipped}")
    status = _git(
        ["-C", top, "status", "--porcelain=v1", "--untracked-files=normal", *spec],
        where,
        found,
        timeout,
    )
    relative = _relative(manifest.resolve(), Path(top))
    info: dict[str, Any] = {
        "repository": top,
        "commit": commit,
        "dirty": None if status is None else bool(status),
        "manifest_path": relative,
    }
    if status is None:
        info["note"] = "git status did not answer; dirty unknown"
    elif relative is not None:
        info["manifest_status"] = _manifest_status(status, relative)
    return info


def _none(note: str) -> dict[str, Any]:
    return {"commit": None, "dirty": None, "note": note}


def _relative(path: Path, top: Path) -> str | None:
    try:
        return path.relative_to(top.resolve()).as_posix()
    except ValueError:
        return None


def _manifest_status(porcelain: str, relative: str) -> str:
    """`committed` (as in the commit), `modified`, `untracked` or `added`, from
    `git status --porcelain=v1` lines (`XY path`)."""
    for line in porcelain.splitlines():
        code, path = line[:2], line[3:]
        if path.strip('"') != relative:
            continue
        if code == "??":
            return "untracked"
        if "A" in code:
            return "added"
        return "modified"
    return "committed"


def describe(info: Mapping[str, Any] | None) -> str:
    """One line for people: `commit 1a2b3c4 (dirty)`, or why there is none."""
    if not info or info.get("commit") is None:
        note = (info or {}).get("note") or "not recorded"
        return f"no commit ({note})"
    state = {True: " (dirty)", False: "", None: " (dirty: unknown)"}[info.get("dirty")]
    return f"commit {str(info['commit'])[:12]}{state}"
