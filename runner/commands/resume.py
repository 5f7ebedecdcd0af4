"""`runner resume DIR [--resubmit-unknown] [--sandbox URL] [--quiet]`: continue a batch."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runner.batch import IN_PROCESS, resume_batch
from runner.commands.run import add_quiet

HELP = "continue a stopped, killed or crashed batch in its directory (from its journal)"


def add_dir_and_sandbox(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", type=Path, help="a batch directory")
    parser.add_argument(
        "--sandbox",
        nargs="?",
        const=IN_PROCESS,
        default=None,
        metavar="URL",
        help="the sandbox the batch ran against (e.g. http://127.0.0.1:8000)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    add_dir_and_sandbox(parser)
    parser.add_argument(
        "--resubmit-unknown",
        action="store_true",
        help="send again the submits whose outcome is unknown (submit_unknown): only when "
        "you have checked the provider has no such job, or a duplicate costs nothing",
    )
    add_quiet(parser)


def execute(args: argparse.Namespace) -> int:
    return resume_batch(
        args.dir,
        resubmit_unknown=args.resubmit_unknown,
        sandbox=args.sandbox,
        argv=sys.argv,
        quiet=args.quiet,
    )
