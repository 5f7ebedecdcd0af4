"""`runner run M [--out DIR] [--sandbox [URL]] [--only ID] [--tag T] [--quiet]`: run a manifest."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from runner.batch import rate_store, shard
from runner.batch.run import IN_PROCESS, run_batch

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
    rate_store.add_options(parser, shards=True)
    add_quiet(parser)


def execute(args: argparse.Namespace) -> int:
    return run_batch(
        args.manifest,
        out=args.out,
        sandbox=args.sandbox,
        only=args.only,
        tags=args.tag,
        argv=sys.argv,
        quiet=args.quiet,
        shard=shard.from_options(args.shard, args.shards, os.environ),
        store=rate_store.from_options(args.rate_store, os.environ),
    )
