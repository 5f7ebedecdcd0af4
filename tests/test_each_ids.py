"""Ids made by `each` are the same in every process: `run` and a later `resume` agree."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from runner.manifest.each import MAX_ID_LENGTH, shorten

LONG = "report-" + "x" * 200


def test_a_long_id_keeps_a_prefix_and_a_sha256_of_the_whole() -> None:
    digest = hashlib.sha256(LONG.encode("utf-8")).hexdigest()[:10]
    assert shorten(LONG) == LONG[: MAX_ID_LENGTH - 11] + "-" + digest
    assert len(shorten(LONG)) == MAX_ID_LENGTH
    assert shorten("short-id") == "short-id"


def test_a_long_id_is_the_same_in_another_process_with_another_hash_seed() -> None:
    # Python's hash() of a str changes per process (PYTHONHASHSEED): an id built on it
    # would differ between `runner run` and `runner resume`, and the journal's jobs would
    # no longer be found in the manifest.
    code = f"from runner.manifest.each import shorten; print(shorten({LONG!r}))"
    seen = set()
    for seed in ("1", "2", "random"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        seen.add(out.stdout.strip())
    assert seen == {shorten(LONG)}
