"""`runner retry DIR [--only ID] [--endpoint P=URL] [--sandbox URL] [--quiet] [--json]
[--ping URL]`: a new attempt, in place, of the jobs of a batch that failed, timed out or
expired."""

from __future__ import annotations

import argparse
import sys

from runner.batch.notify import OnBatch
from runner.batch.run import retry_batch
from runner.commands.resume import add_dir_and_sandbox
from runner.commands.run import add_cron_outputs, add_quiet, reported, without_ping

HELP = "send again, in the same batch directory, the jobs that failed, timed out or expired"

EPILOG = """\
Each retried job gets a new attempt: its earlier files move from jobs/ID/ to
attempts/ID/N/ (N = the attempt that made them) and it is submitted afresh. Jobs that
succeeded are never sent again, even when named by --only. cancelled and skipped jobs are
left as they are (run them with runner run --only ID); submit_unknown jobs too, since they
may exist remotely (runner resume --resubmit-unknown sends them). A timed_out job's remote
job may still be running on the provider: retry does not wait for it, it submits a new one.
The batch is sealed again (SHA256SUMS, batch.json, latest); exit 0 if every job of the
batch succeeded, 1 if some did not. Killed during a retry: runner resume DIR continues it.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_dir_and_sandbox(parser)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ID",
        help="retry only this job, if it failed, timed out or expired (repeatable)",
    )
    add_quiet(parser)
    add_cron_outputs(parser)


def execute(args: argparse.Namespace) -> int:
    def run(on_batch: OnBatch | None) -> int:
        return retry_batch(
            args.dir,
            only=args.only,
            sandbox=args.sandbox,
            endpoints=args.endpoint,
            argv=without_ping(sys.argv),
            quiet=args.quiet,
            on_batch=on_batch,
        )

    return reported(args, run)
