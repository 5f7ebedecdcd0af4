"""`runner verify DIR`: check a batch directory's files against its SHA256SUMS."""

from __future__ import annotations

import argparse
from pathlib import Path

from runner.commands.resume import DIR_HELP
from runner.exits import ExitCode
from runner.store.locate import resolve_batch_dir
from runner.store.results import check

HELP = "check a batch directory's files against its SHA256SUMS"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", type=Path, help=DIR_HELP)


def execute(args: argparse.Namespace) -> int:
    files, problems = check(resolve_batch_dir(args.dir))  # NotABatchDirError: exit 2
    if not problems:
        print(f"{args.dir}: OK ({files} files)")
        return ExitCode.OK
    count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
    print(f"{args.dir}: {count}")
    for problem in problems:
        print(f"  {problem}")
    return ExitCode.JOBS_FAILED
