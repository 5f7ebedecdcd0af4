"""`runner plan` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse

from runner.errors import UsageError

HELP = "plan (not built yet)"


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def execute(args: argparse.Namespace) -> int:
    raise UsageError("'plan' is not built yet")
