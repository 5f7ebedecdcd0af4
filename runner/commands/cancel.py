"""`runner cancel DIR`: cancel a stopped batch's remote jobs (where it ran) and seal it.

A batch still running holds its lock: cancel exits 4 and names it; stop it first with
`kill -TERM PID` (its providers' `on_interrupt` applies), then cancel.
"""

from __future__ import annotations

import argparse
import sys

from runner.batch.run import cancel_batch
from runner.commands.resume import add_dir_and_sandbox
from runner.commands.run import add_quiet

HELP = "cancel every remote job of a stopped batch that is still active, and seal it"


def configure(parser: argparse.ArgumentParser) -> None:
    add_dir_and_sandbox(parser)
    add_quiet(parser)


def execute(args: argparse.Namespace) -> int:
    return cancel_batch(
        args.dir,
        sandbox=args.sandbox,
        endpoints=args.endpoint,
        argv=sys.argv,
        quiet=args.quiet,
    )
