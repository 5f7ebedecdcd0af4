"""`runner merge DIR... [--out OUT]`: the shard batches of one manifest as one batch directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runner.batch.merge import merge_batches

HELP = "merge the finished shard batches of one manifest into one batch directory"

EPILOG = """\
Every shard of the split (runner run --shard K/N) must be given once, finished and intact
(runner verify passes on each), from the same manifest and inputs; together they must hold
every job exactly once. The merged batch is written under OUT/<name>/<batch-id>/ as runner
run --out does: its jobs/ tree and SHA256SUMS are those of the same manifest run unsharded
against the same answers. Exit 0 if every job succeeded, 1 if some did not, 2 if the shards
do not make one batch (one line says why).
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "dirs", nargs="+", type=Path, metavar="DIR", help="the batch directory of each shard"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results"),
        metavar="OUT",
        help="results root for the merged batch (default: results)",
    )


def execute(args: argparse.Namespace) -> int:
    merged = merge_batches(args.dirs, args.out, argv=sys.argv)
    states = ", ".join(f"{n} {state}" for state, n in sorted(merged.counts.items()) if n)
    print(
        f"merged {len(args.dirs)} shards, {merged.jobs} job{'' if merged.jobs == 1 else 's'} "
        f"({states}) into {merged.path} "
        f"(exit {merged.exit_code})"
    )
    return merged.exit_code
