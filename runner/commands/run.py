"""`runner run M [--out DIR] [--sandbox [URL]] [--only ID] [--tag T] [--quiet]`: run a manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runner.batch.reuse import Policy
from runner.batch.run import IN_PROCESS, run_batch
from runner.durations import parse_duration

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
    add_out(parser, "results root (default: results)")
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
    add_reuse(parser)


def add_out(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--out", type=Path, default=Path("results"), metavar="DIR", help=text)


ALL_JOBS = "\0all"  # `--force` without an id


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_reuse(parser: argparse.ArgumentParser) -> None:
    """`--force [ID]` and `--max-age D`: what an earlier batch's results may answer
    (README "Incremental runs"); `runner run` and `runner plan` share them."""
    parser.add_argument(
        "--force",
        action="append",
        nargs="?",
        const=ALL_JOBS,
        default=[],
        metavar="ID",
        help="send again instead of reusing an earlier result: every job, or job ID "
        "(repeatable; put it after MANIFEST, or write --force=ID)",
    )
    parser.add_argument(
        "--max-age",
        type=_duration,
        default=None,
        metavar="D",
        help="reuse only earlier results younger than D (e.g. 7d, 12h); overrides max_age "
        "in the manifest",
    )


def reuse_policy(args: argparse.Namespace) -> Policy:
    forced = list(args.force)
    return Policy(
        force_all=ALL_JOBS in forced,
        force=frozenset(f for f in forced if f != ALL_JOBS),
        max_age=args.max_age,
    )


def execute(args: argparse.Namespace) -> int:
    return run_batch(
        args.manifest,
        out=args.out,
        sandbox=args.sandbox,
        only=args.only,
        tags=args.tag,
        argv=sys.argv,
        quiet=args.quiet,
        policy=reuse_policy(args),
    )
