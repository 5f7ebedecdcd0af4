"""Process exit codes: the contract with make targets and cron (README.md#exit-codes)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # every job succeeded
    JOBS_FAILED = 1  # the batch finished, some jobs did not succeed
    INVALID = 2  # invalid manifest or usage
    INTERNAL = 3  # internal error (the message names the log)
    LOCKED = 4  # another run holds this manifest's lock
    SIGINT = 130  # interrupted by SIGINT; state saved, `runner resume` continues
    SIGTERM = 143  # interrupted by SIGTERM; state saved, `runner resume` continues
