"""`runner resume DIR [--resubmit-unknown] [--endpoint P=URL] [--sandbox URL] [--quiet]
[--json] [--ping URL]`:
continue a batch where it ran (the endpoints batch.json recorded)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from runner.batch import rate_store, shard
from runner.batch.notify import OnBatch
from runner.batch.run import IN_PROCESS, resume_batch
from runner.commands.run import add_cron_outputs, add_quiet, reported, without_ping

HELP = "continue a stopped, killed or crashed batch in its directory (from its journal)"


DIR_HELP = "a batch directory, results/<name>/latest, or results/<name> (its newest batch)"


def endpoint(text: str) -> tuple[str, str]:
    """`--endpoint PROVIDER=URL`."""
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise argparse.ArgumentTypeError(f"{text!r} is not PROVIDER=URL")
    return name, url


def add_dir_and_sandbox(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", type=Path, help=DIR_HELP)
    parser.add_argument(
        "--sandbox",
        nargs="?",
        const=IN_PROCESS,
        default=None,
        metavar="URL",
        help="move every provider to this sandbox (default: where the batch ran, as "
        "batch.json recorded); refused while jobs live at the old endpoints",
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        type=endpoint,
        default=[],
        metavar="PROVIDER=URL",
        help="move one provider to another base URL (repeatable); refused while that "
        "provider has jobs at the old one",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    add_dir_and_sandbox(parser)
    parser.add_argument(
        "--resubmit-unknown",
        action="store_true",
        help="send again the submits whose outcome is unknown (submit_unknown): only when "
        "you have checked the provider has no such job, or a duplicate costs nothing",
    )
    rate_store.add_options(parser, shards=False)
    add_quiet(parser)
    add_cron_outputs(parser)


def execute(args: argparse.Namespace) -> int:
    def run(on_batch: OnBatch | None) -> int:
        return resume_batch(
            args.dir,
            resubmit_unknown=args.resubmit_unknown,
            sandbox=args.sandbox,
            endpoints=args.endpoint,
            argv=without_ping(sys.argv),
            quiet=args.quiet,
            shard=shard.from_options(args.shard, None, os.environ),
            store=rate_store.from_options(args.rate_store, os.environ),
            on_batch=on_batch,
        )

    return reported(args, run)
