"""A batch's inputs: its `each` files, copied into `DIR/inputs/` when it starts (byte for byte,
with their sha256), then checked and read from there, never from where the manifest was, by
every command that continues the batch (resume, cancel, retry).

The record, in the journal's meta and in batch.json, maps each file as written in the
manifest to `{"copy": "inputs/<safe name>", "sha256": HEX}`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from runner.errors import EachError, InputError, StoreError
from runner.manifest.each import EachFile, Resolver
from runner.store.jsonio import temp_for
from runner.store.results import INPUTS
from runner.store.sanitize import safe_name

META_KEY = "inputs"  # journal meta: canonical JSON of the record
_CHUNK = 1024 * 1024
_HEX = re.compile(r"^[0-9a-f]{64}$")

Inputs = dict[str, dict[str, str]]  # as written -> {"copy": "inputs/<name>", "sha256": hex}


def copy_inputs(batch_path: Path, files: Sequence[EachFile]) -> Inputs:
    """Copy every `each` file into `batch_path/inputs/` (flat, sanitized, numbered on a name
    collision, so `../x.csv` or two `items.csv` stay inside and apart) and return the record.
    InputError if a file no longer holds the bytes the plan was made from."""
    taken: set[str] = set()
    record: Inputs = {}
    for each_file in files:
        if each_file.written in record:
            continue
        name = safe_name(each_file.written.replace("\\", "/").rsplit("/", 1)[-1], taken)
        digest = _copy(each_file, batch_path / INPUTS / name)
        if digest != each_file.sha256:
            raise InputError(
                f"each file {each_file.written!r} changed while the batch was starting; "
                "nothing was sent: run it again"
            )
        record[each_file.written] = {"copy": f"{INPUTS}/{name}", "sha256": digest}
    return record


def _copy(each_file: EachFile, dest: Path) -> str:
    """Stream `each_file` to `dest` through a temporary name; the sha256 of what was copied."""
    try:
        source = each_file.path.open("rb")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise InputError(f"cannot copy each file {each_file.written!r}: {reason}") from None
    digest = hashlib.sha256()
    tmp = temp_for(dest)
    with source:
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("xb") as out:
                _pump(source, out, digest.update)
                out.flush()
                os.fsync(out.fileno())  # resume relies on it: whole before it is recorded
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write {dest}: {exc.strerror or exc}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return digest.hexdigest()


def _pump(source: IO[bytes], out: IO[bytes], seen: Callable[[bytes], None]) -> None:
    while chunk := source.read(_CHUNK):
        seen(chunk)
        out.write(chunk)


def render(record: Mapping[str, Mapping[str, str]]) -> str:
    """The record as stored in the journal's meta."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse(text: str) -> Inputs:
    """The record read back from the journal's meta; InputError if it is not one."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(
        isinstance(written, str) and _valid_entry(entry) for written, entry in value.items()
    ):
        raise InputError("the journal's record of its inputs is unreadable")
    return value


def _valid_entry(entry: object) -> bool:
    if not isinstance(entry, dict) or set(entry) != {"copy", "sha256"}:
        return False
    copy, digest = entry["copy"], entry["sha256"]
    if not isinstance(copy, str) or not isinstance(digest, str):
        return False
    parts = copy.split("/")  # exactly inputs/<name>: a record never points elsewhere
    return (
        len(parts) == 2
        and parts[0] == INPUTS
        and parts[1] not in ("", ".", "..")
        and "\\" not in parts[1]
        and _HEX.match(digest) is not None
    )


def check_manifest(batch_path: Path, manifest: str, sha256: str | None) -> None:
    """The batch's copy of its manifest is the one it started from (when one was recorded)."""
    try:
        with (batch_path / manifest).open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise InputError(f"its {manifest} cannot be read: {exc.strerror or exc}") from None
    if sha256 is not None and digest != sha256:
        raise InputError(f"its {manifest} has changed since the batch started (sha256 differs)")


def check_copies(batch_path: Path, record: Mapping[str, Mapping[str, str]]) -> Resolver:
    """Check every copy against its recorded sha256; the resolver that reads the copies.
    InputError naming the first copy missing or changed."""
    for written, entry in record.items():
        copy = batch_path / entry["copy"]
        what = f"its copy of input {written!r} ({entry['copy']})"
        try:
            with copy.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
        except FileNotFoundError:
            raise InputError(f"{what} is missing") from None
        except OSError as exc:
            raise InputError(f"{what} cannot be read: {exc.strerror or exc}") from None
        if digest != entry["sha256"]:
            raise InputError(f"{what} has changed since the batch started (sha256 differs)")
    return resolver(batch_path, record)


def resolver(batch_path: Path, record: Mapping[str, Mapping[str, str]]) -> Resolver:
    """`each` files as written -> the batch's copies; a file the batch did not copy is an
    EachError (its manifest.yaml names a file it never read)."""

    def resolve(written: str) -> Path:
        entry = record.get(written)
        if entry is None:
            raise EachError(written, 0, 0, "not among the inputs this batch copied")
        return batch_path / entry["copy"]

    return resolve


def check_read(record: Mapping[str, Mapping[str, str]], read: Sequence[EachFile]) -> None:
    """The copies the plan was just made from are the recorded bytes (they could change
    between `check_copies` and the parse)."""
    for each_file in read:
        entry = record.get(each_file.written)
        if entry is not None and entry["sha256"] != each_file.sha256:
            raise InputError(
                f"its copy of input {each_file.written!r} ({entry['copy']}) has changed "
                "since the batch started (sha256 differs)"
            )


def reopen(batch_path: Path, meta: Mapping[str, str], manifest: str) -> tuple[Inputs, Resolver]:
    """For a batch being continued, from its journal's meta: its record of inputs, after
    checking its manifest and every copy, and the resolver that reads the copies. A batch
    with no record (started before inputs were copied) may read no `each` file at all."""
    record = parse(meta.get(META_KEY, "{}"))
    check_manifest(batch_path, manifest, meta.get("manifest_sha256"))
    return record, check_copies(batch_path, record)
