"""`runner report DIR [--out FILE]`: one self-contained HTML page of what a batch did.

Reads the journal read-only and the log up to its last complete line, takes no lock: it
works while the batch runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from runner.commands.resume import DIR_HELP
from runner.exits import ExitCode
from runner.report.data import manifest_secrets
from runner.report.page import REPORT, write_report
from runner.store.locate import resolve_batch_dir

HELP = "draw a batch (timeline, load per provider, failures) as one HTML file"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", type=Path, help=DIR_HELP)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"where to write the page (default: DIR/{REPORT})",
    )


def execute(args: argparse.Namespace) -> int:
    batch = resolve_batch_dir(args.dir)
    out, seconds = write_report(batch, secrets=manifest_secrets(batch, os.environ), out=args.out)
    print(f"runner: report written to {out} in {seconds:.1f}s", file=sys.stderr)
    return ExitCode.OK
