"""Run the survivors of the last `make mutate` again against a few test files, in one process.

    cd mutants && ../.venv/bin/python -m tests.mutation_recheck runner/engine/engine.py \
        tests/test_engine_guards.py

Each survivor of that module (read from its .meta file) is switched on through
MUTANT_UNDER_TEST, as mutmut does, and the given tests run; the ones still passing are
printed. Much faster than a new mutmut run for checking that new guard tests kill what they
were written for; mutmut's own .meta verdicts are not changed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import pytest


def survivors(module: str) -> list[str]:
    meta = Path(module + ".meta")
    verdicts = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
    return [name for name, code in verdicts.items() if code == 0]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    names, tests = survivors(argv[0]), argv[1:]
    left = []
    for name in names:
        os.environ["MUTANT_UNDER_TEST"] = name
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = pytest.main(["-q", "-x", "-p", "no:cacheprovider", *tests])
        if code == 0:
            left.append(name)
    os.environ.pop("MUTANT_UNDER_TEST", None)
    print(f"{len(names) - len(left)} of {len(names)} survivors killed; still alive:")
    print("\n".join(left))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
