"""`runner run M [--out DIR] [--sandbox [URL]] [--only ID] [--tag T] [--quiet] [--report]
[--sample N] [--allow-partial] [--json] [--ping URL] [--shard K/N] [--rate-store URL]
[--force [ID]] [--max-age D]`: run a manifest."""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from runner.batch import rate_store, shard
from runner.batch.notify import OnBatch, run_reported
from runner.batch.reuse import Policy
from runner.batch.run import IN_PROCESS, run_batch
from runner.durations import parse_duration
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
    rate_store.add_options(parser, shards=True)
    add_quiet(parser)
    parser.add_argument(
        "--report",
        action="store_true",
        help=f"at the end (also after a failure), write {REPORT} next to batch.json",
    )
    parser.add_argument(
        "--sample",
        type=_positive,
        default=None,
        metavar="N",
        help="canary: run N jobs of each provider and type first; the rest only if all "
        "of them succeed and meet their expectations",
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="run a plan over its budget's job caps: the jobs past a cap are skipped",
    )
    add_cron_outputs(parser)
    add_reuse(parser)


def add_cron_outputs(parser: argparse.ArgumentParser) -> None:
    """`--json` and `--ping URL` (runner.batch.notify): run, resume and retry share them."""
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one machine-readable summary on stdout (and nothing else)",
    )
    parser.add_argument(
        "--ping",
        metavar="URL",
        default=None,
        help="healthchecks-style pings: URL/start, then URL (success) or URL/fail with "
        "the summary; a failed ping never fails the batch",
    )


def reported(args: argparse.Namespace, run: Callable[[OnBatch | None], int]) -> int:
    """`run` as is, or with the summary and pings `--json` / `--ping` ask for."""
    if not args.json and args.ping is None:
        return run(None)
    return run_reported(
        run, json_out=args.json, ping=args.ping, stdout=sys.stdout, stderr=sys.stderr
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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def without_ping(argv: list[str]) -> list[str]:
    """argv as batch.json and the log keep it: a ping URL carries the monitor's secret."""
    kept: list[str] = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] == "--ping":
            kept.append("***")
        elif arg.startswith("--ping="):
            kept.append("--ping=***")
        else:
            kept.append(arg)
    return kept


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
    def run(on_batch: OnBatch | None = None) -> int:
        return run_batch(
            args.manifest,
            out=args.out,
            sandbox=args.sandbox,
            only=args.only,
            tags=args.tag,
            argv=without_ping(sys.argv),
            quiet=args.quiet,
            report=report_after_run if args.report else None,
            sample=args.sample,
            allow_partial=args.allow_partial,
            on_batch=on_batch,
            policy=reuse_policy(args),
            shard=shard.from_options(args.shard, args.shards, os.environ),
            store=rate_store.from_options(args.rate_store, os.environ),
        )

    return reported(args, run)
