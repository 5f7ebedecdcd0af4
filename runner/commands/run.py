"""`runner run M [--out DIR] [--sandbox [URL]] [--only ID] [--tag T] [--quiet] [--report]`: run a
manifest."""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

from runner.batch.run import IN_PROCESS, run_batch
from runner.errors import RunnerError
from runner.report.page import REPORT, write_report
from runner.store.redaction import redact

HELP = "run every job of a manifest to the end and write the results directory"


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="for cron: print only errors and the summary line",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", type=Path, metavar="MANIFEST")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results"),
        metavar="DIR",
        help="results root (default: results)",
    )
    parser.add_argument(
        "--sandbox",
        nargs="?",
        const=IN_PROCESS,
        default=None,
        metavar="URL",
        help="point every provider at the sandbox: started in-process, or one already "
        "running at URL (e.g. http://127.0.0.1:8000); unset API keys get a sandbox key",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ID",
        help="run only this job (repeatable)",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="T",
        help="run only jobs with this tag (repeatable)",
    )
    add_quiet(parser)
    parser.add_argument(
        "--report",
        action="store_true",
        help=f"at the end (also after a failure), write {REPORT} next to batch.json",
    )


def report_after_run(batch: Path, secrets: Sequence[str]) -> None:
    """`--report`: write the page; a failure to is one line, never the run's exit code."""
    try:
        out, _ = write_report(batch, secrets=secrets)
    except (RunnerError, OSError, sqlite3.Error, ValueError) as exc:
        with contextlib.suppress(OSError):
            print(
                f"runner: --report: no report written: {redact(str(exc), secrets)}", file=sys.stderr
            )
        return
    with contextlib.suppress(OSError):
        print(f"runner: report: {out}", file=sys.stderr)


def execute(args: argparse.Namespace) -> int:
    return run_batch(
        args.manifest,
        out=args.out,
        sandbox=args.sandbox,
        only=args.only,
        tags=args.tag,
        argv=sys.argv,
        quiet=args.quiet,
        report=report_after_run if args.report else None,
    )
