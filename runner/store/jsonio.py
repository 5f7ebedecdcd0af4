"""Canonical JSON, atomic file writes and runner's temporary names: every file runner leaves
is whole or absent."""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

# Runner's temporaries are hidden names ending in ".tmp": `safe_name` never hands out a name
# starting with "." (a property test proves it), so the end-of-batch sweep, which deletes
# exactly these, can never delete a file a provider named.
_TEMP_PREFIX = "."
_TEMP_SUFFIX = ".tmp"
_TEMP_NUMBERS = itertools.count(1)


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, 2-space indent, UTF-8, trailing newline: byte-identical for equal data."""
    text = json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def json_line(obj: Any) -> bytes:
    """One compact JSON Lines record with sorted keys (stable bytes for equal data)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


def atomic_write(path: Path, data: bytes, *, fsync: bool = False) -> None:
    """Write `data` to a temporary name beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_canonical_json(path: Path, obj: Any) -> None:
    atomic_write(path, canonical_json(obj))


def temp_name(name: str) -> str:
    """The fixed temporary name of `name` (a stream renamed into place when complete)."""
    return f"{_TEMP_PREFIX}{name}{_TEMP_SUFFIX}"


def temp_for(path: Path) -> Path:
    """A fresh temporary name beside `path` to write into before renaming it into place
    (unique per process and call); the batch's end sweeps any leftovers."""
    return path.with_name(temp_name(f"{path.name}.{os.getpid()}.{next(_TEMP_NUMBERS)}"))


def is_temp_name(name: str) -> bool:
    """A runner temporary: `temp_name`, `temp_for` or `atomic_write`'s."""
    return name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)
