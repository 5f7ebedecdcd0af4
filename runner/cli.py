"""The command line: argument parsing, dispatch, and the mapping of failures to exit codes.

Each subcommand is a module in runner/commands/ with `HELP`, `configure(parser)` and
`execute(args) -> int`; this module only wires them up and owns the error handler.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from runner import __version__
from runner.commands import cancel, plan, resume, retry, run, sandbox, status, validate, verify
from runner.errors import LockHeldError, ManifestError, RunnerError, UsageError
from runner.exits import ExitCode

COMMANDS: dict[str, ModuleType] = {
    "validate": validate,
    "plan": plan,
    "run": run,
    "resume": resume,
    "retry": retry,
    "status": status,
    "cancel": cancel,
    "verify": verify,
    "sandbox": sandbox,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 on usage errors, which is also our "invalid usage" code.
        self.print_usage(sys.stderr)
        self.exit(ExitCode.INVALID, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="runner",
        description="Run batches of asynchronous scraping and extraction jobs from manifests.",
    )
    parser.add_argument("--version", action="version", version=f"runner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module in COMMANDS.items():
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(command)
        command.set_defaults(execute=module.execute)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.execute(args)
    except ManifestError as exc:
        print(exc, file=sys.stderr)
        count = len(exc.problems)
        print(f"{count} problem{'' if count == 1 else 's'}; nothing was sent", file=sys.stderr)
        return ExitCode.INVALID
    except UsageError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return ExitCode.INVALID
    except LockHeldError as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return ExitCode.LOCKED
    except RunnerError as exc:
        print(f"runner: error: {exc}", file=sys.stderr)
        return ExitCode.INTERNAL
    return code
