"""`runner validate M...`: check manifests completely before any credit is spent.

Problems go to stderr, one per line (`FILE:LINE:COL: PATH: message`, sorted by position)
and a closing `FILE: N problems`; `--json` prints them as a JSON list on stdout. Exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runner.errors import ManifestError, Problem
from runner.exits import ExitCode
from runner.manifest.loader import load_manifest

HELP = "check manifests (YAML, schemas, ids, environment) without any network call"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifests", nargs="+", type=Path, metavar="MANIFEST")
    parser.add_argument(
        "--json", action="store_true", help="print the problems as a JSON list on stdout"
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="accept unset API-key variables (as `run --sandbox` does)",
    )


def summary(file: str, count: int) -> str:
    return f"{file}: {count} problem" + ("" if count == 1 else "s")


def execute(args: argparse.Namespace) -> int:
    every: list[Problem] = []
    for path in args.manifests:
        try:
            loaded = load_manifest(path, sandbox_keys=args.sandbox)
        except ManifestError as exc:
            every.extend(exc.problems)
            if not args.json:
                for problem in exc.problems:
                    print(problem.render(), file=sys.stderr)
                print(summary(str(path), len(exc.problems)), file=sys.stderr)
            continue
        for notice in loaded.notices:
            print(notice, file=sys.stderr)
        if not args.json:
            jobs = len(loaded.plan.jobs)
            print(f"{path}: ok ({jobs:,} job{'' if jobs == 1 else 's'})")
    if args.json:
        print(json.dumps([p.as_dict() for p in every], indent=2, ensure_ascii=False))
    return ExitCode.INVALID if every else ExitCode.OK
