"""Per-module scores of the last `make mutate` run, read from mutmut's mutants/*.meta files.

Killed counts mutmut's killed, timeout and type-check verdicts; survivors and mutants no
selected test reaches ("no tests") are the misses; "not run" were outside the run's MUTANTS.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

CAUGHT = {1, 3, 24, -24, 36, 37, 152, 255, -9, -11}  # killed, timeout, type check, crash


def score(meta: Path) -> str:
    verdicts = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
    seen = Counter(
        "killed"
        if code in CAUGHT
        else "survived"
        if code == 0
        else "not run"
        if code is None
        else "no tests"
        if code in (5, 33)
        else "other"
        for code in verdicts.values()
    )
    done = len(verdicts) - seen["not run"]
    share = f"{100 * seen['killed'] / done:.1f} %" if done else "-"
    module = meta.relative_to("mutants/runner").as_posix().removesuffix(".py.meta")
    return (
        f"{module:<18} killed {seen['killed']}/{done} ({share}); survived {seen['survived']}, "
        f"no tests {seen['no tests']}, other {seen['other']}, not run {seen['not run']}"
    )


def main() -> int:
    metas = sorted(Path("mutants/runner").rglob("*.py.meta"))  # in subpackages too
    if not metas:
        print("no mutation results: run `make mutate` first", file=sys.stderr)
        return 1
    for meta in metas:
        print(score(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
