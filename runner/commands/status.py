"""`runner status` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse

from runner.errors import UsageError

HELP = "status (not built yet)"


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def execute(args: argparse.Namespace) -> int:
    raise UsageError("'status' is not built yet")
