"""Which batch a DIR argument names: a batch directory, `results/<name>/latest`, or
`results/<name>` (its newest batch). One function, for every command that takes DIR."""

from __future__ import annotations

import os
import re
from pathlib import Path

from runner.errors import NotABatchDirError
from runner.store.results import GIVE_DIR, LATEST, MANIFEST

# `20261122T030000Z`, `...-2` (a second batch that second), a shard's `...-s2of4` (and
# `...-s2of4-2`): runner.batch.shard names them.
_BATCH_NAME = re.compile(r"^(\d{8}T\d{6}Z)(-s\d+of\d+)?(?:-(\d+))?$")


def _newest_key(path: Path) -> tuple[int, str, int, str]:
    # `20261122T030000Z-10` is newer than `...-9`: the suffix compares as a number. A
    # shard's batch sorts by its start like any other (shards of one run: by name).
    match = _BATCH_NAME.match(path.name)
    if match is None:
        return (0, "", 0, path.name)
    return (1, match.group(1), int(match.group(3) or 1), path.name)


def resolve_batch_dir(path: Path) -> Path:
    """The batch directory `path` names, `latest` followed one level (so messages and hints
    show the batch itself). `results/<name>` means its newest batch, finished or not (a
    killed run is the one to resume); `results/<name>/latest` is the newest finished one.
    NotABatchDirError (exit 2) names the path and what to give instead."""
    if (path / MANIFEST).is_file():
        return path.parent / os.readlink(path) if path.is_symlink() else path
    if not path.exists():
        raise NotABatchDirError(f"{path}: no such directory; {GIVE_DIR}")
    if path.is_dir():
        batches = batches_in(path)
        if batches:
            return batches[0]
    raise NotABatchDirError(f"{path} is not a batch directory (no {MANIFEST}); {GIVE_DIR}")


def is_batch_name(name: str) -> bool:
    """A name runner gives a batch directory: `20261122T030000Z`, `20261122T030000Z-2`,
    a shard's `20261122T030000Z-s2of4`."""
    return _BATCH_NAME.match(name) is not None


def batches_in(directory: Path) -> list[Path]:
    """The batch directories of one manifest (`results/<name>/`), newest first; `latest`
    and anything that is not a batch left out. Empty when `directory` is none."""
    try:
        children = list(directory.iterdir())
    except OSError:
        return []
    batches = [
        child
        for child in children
        if child.name != LATEST and not child.is_symlink() and (child / MANIFEST).is_file()
    ]
    return sorted(batches, key=_newest_key, reverse=True)
