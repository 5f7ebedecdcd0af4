"""The command line: argument parsing, dispatch, and the mapping of failures to exit codes.

Each subcommand is a module in runner/commands/ with `HELP`, `configure(parser)` and
`execute(args) -> int`; this module only wires them up and owns the error handler.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Sequence
from types import ModuleType

from runner import __version__
from runner.commands import (
    cancel,
    diff,
    merge,
    plan,
    prune,
    report,
    resume,
    retry,
    run,
    sandbox,
    status,
    validate,
    verify,
)
from runner.errors import LockHeldError, ManifestError, RunnerError, StoreError, UsageError
from runner.exits import ExitCode
from runner.store.redaction import redact

COMMANDS: dict[str, ModuleType] = {
    "validate": validate,
    "plan": plan,
    "run": run,
    "resume": resume,
    "retry": retry,
    "status": status,
    "cancel": cancel,
    "verify": verify,
    "merge": merge,
    "sandbox": sandbox,
    "report": report,
    "prune": prune,
    "diff": diff,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, exit 2 (argparse's code is also our "invalid usage" code).
        self.exit(ExitCode.INVALID, f"{self.prog}: error: {message}; see {self.prog} --help\n")


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
    """Parse, dispatch, and turn every failure into one line and an exit code: no
    traceback ever reaches a user (an unexpected one is written to a file the line names)."""
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
    except StoreError as exc:  # a write refused before a batch ran: nothing was sent
        with contextlib.suppress(OSError):
            print(f"runner: {exc}; {exc.remedy}, then run the same command again", file=sys.stderr)
        return ExitCode.INTERNAL
    except RunnerError as exc:
        print(f"runner: error: {exc}", file=sys.stderr)
        return ExitCode.INTERNAL
    except KeyboardInterrupt:
        # Only outside a running batch (which handles its own signals): nothing to resume.
        print("runner: interrupted", file=sys.stderr)
        return ExitCode.SIGINT
    except BrokenPipeError:
        # `runner status | head`: the reader left; nothing to say to it.
        with contextlib.suppress(OSError):
            sys.stderr.close()
        return ExitCode.INTERNAL
    except OSError as exc:
        if exc.filename is None:
            return _unexpected(exc)
        where = exc.filename if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}"
        print(
            f"runner: {where}: {exc.strerror or exc}; check that path and its permissions",
            file=sys.stderr,
        )
        return ExitCode.INVALID
    except Exception as exc:
        return _unexpected(exc)
    return code


_SECRET_VAR = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)


def _secrets() -> list[str]:
    """Values of environment variables that look like credentials: they never reach the
    crash file or the line (a manifest's keys come from such variables)."""
    return [v for k, v in os.environ.items() if _SECRET_VAR.search(k) and len(v) >= 4]


def _unexpected(exc: BaseException) -> int:
    """A bug: one line naming the exception and the file that holds its traceback, exit 3."""
    secrets = _secrets()
    message = redact(f"{type(exc).__name__}: {exc}", secrets)
    trace = redact("".join(traceback.format_exception(exc)), secrets)
    try:
        fd, name = tempfile.mkstemp(prefix="runner-crash-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(trace)
        where = f"the traceback is in {name}"
    except OSError as write_error:
        where = f"the traceback could not be written ({write_error.strerror or write_error})"
    print(f"runner: internal error: {message}; {where}; please report it", file=sys.stderr)
    return ExitCode.INTERNAL
