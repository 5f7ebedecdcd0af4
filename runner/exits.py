"""Process exit codes: the contract with make targets and cron (README.md#exit-codes)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0  # every job succeeded
    JOBS_FAILED = 1  # the batch finished, some jobs did not succeed
    INVALID = 2  # invalid manifest or usage
    INTERNAL = 3  # internal error (the message names the log)
    LOCKED = 4  # another run holds this manifest's lock
    RATE_STORE_LOST = 5  # the shared rate store (--rate-store) stopped answering; resumable
    SIGINT = 130  # interrupted by SIGINT; state saved, `runner resume` continues
    SIGTERM = 143  # interrupted by SIGTERM; state saved, `runner resume` continues
