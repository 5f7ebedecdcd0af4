"""Every exception runner raises, in one tree split by what the caller does about it.

Indentation is inheritance; each line says what the one who catches it does:

RunnerError               the CLI prints it in one line, never a traceback (exit 3 unless below)
  UsageError              fix the command line or the path given and run again (exit 2)
    NotABatchDirError     give results/<name>/<batch-id>, its `latest`, or results/<name>
    InputError            restore or stop changing the `each` file the batch copied
  ManifestError           fix every Problem it lists, all at once, located (exit 2)
  YamlError               the manifest loader's own: it becomes a Problem, never escapes
  EachError               the manifest loader's own: it becomes a Problem, never escapes
  LockHeldError           another run holds the manifest's lock: wait, or stop it (exit 4)
  StoreError              a batch file cannot be written: do its `remedy`, then run again
  JournalError            the journal is missing, unreadable or of another version: say so
  IllegalTransitionError  a bug: the lifecycle table has no such move
  TransportError          no HTTP answer (`sent`: may it have arrived?): the client's own,
                          it becomes a ProviderCallError
  ReplyError              an answer that cannot be used: never ask the same again
    TooLargeError         past its size cap: the same, and say which cap
  ProviderCallError       a provider call failed: act on `kind`; re-send a submit only if
                          `not_accepted` (the provider provably did not act on it)
    StoreLostError        the shared rate store (--rate-store) is lost: nothing was sent
  NotCancellableError     nothing was sent: record the job detached, never cancelled
  NotSubmittedError       reconcile proved the provider never created the job: submit again
  JobFailedError          this job cannot succeed: record it failed, the batch goes on
    ProviderResponseError the provider answered something unusable: the same, with an excerpt

`Problem` (one located manifest problem) and `ErrorKind` (what a provider's refusal means)
are the values these errors carry. This module imports nothing of runner: everyone raises
from it.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class RunnerError(Exception):
    """Base of every error runner raises on purpose."""


# -- fix the input -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One located problem in a manifest; sorts by position."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def render(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.column}: {where}{self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
        }


class UsageError(RunnerError):
    """The command line is wrong (exit 2)."""


class NotABatchDirError(UsageError):
    """The path given is not a batch directory (exit 2)."""


class InputError(UsageError):
    """An input cannot be copied, or a batch's copy is missing or changed (exit 2)."""


class ManifestError(RunnerError):
    """The manifest is invalid; carries every problem found, sorted by position."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(p.render() for p in self.problems))


# YamlError and EachError are signals inside the manifest loader, which turns each into a
# Problem of its ManifestError where it catches them; they carry a position for that.


class YamlError(RunnerError):
    """A fatal problem reading the document, at a 1-based position."""

    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.message = message


class EachError(RunnerError):
    """An item source cannot be read; located at (file, line, column)."""

    def __init__(self, file: str, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.file, self.line, self.column, self.message = file, line, column, message


class LockHeldError(RunnerError):
    """Another run holds this manifest's lock (exit 4)."""


# -- fix the place -----------------------------------------------------------------------------


class StoreError(RunnerError):
    """A file of the batch could not be written (disk full, read-only, I/O error): the one
    error every write path raises, naming the path and the reason. `remedy` is what a person
    does about it before continuing ("free space")."""

    def __init__(
        self,
        message: str,
        *,
        path: Path | None = None,
        reason: str | None = None,
        remedy: str = "fix that",
    ) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason
        self.remedy = remedy


# errno → what a person does about it. ENOSPC/EDQUOT/EFBIG: the disk, the quota or the
# per-file limit is full; EROFS/EACCES/EPERM: the place cannot be written at all.
_REMEDIES = {
    errno.ENOSPC: "free space",
    errno.EDQUOT: "free space",
    errno.EFBIG: "free space",
    errno.EROFS: "make it writable",
    errno.EACCES: "make it writable",
    errno.EPERM: "make it writable",
    errno.ENOENT: "restore that directory",
}
# SQLite's own result codes for the same causes (sqlite3.Error.sqlite_errorname).
_SQLITE_REMEDIES = {
    "SQLITE_FULL": "free space",
    "SQLITE_READONLY": "make it writable",
    "SQLITE_READONLY_DIRECTORY": "make it writable",
    "SQLITE_CANTOPEN": "make it writable",
}


def remedy_for(exc: BaseException) -> str:
    """What to do before continuing, for the OS's or SQLite's answer (pure)."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and number in _REMEDIES:
        return _REMEDIES[number]
    name = getattr(exc, "sqlite_errorname", None)
    if isinstance(name, str):
        for prefix, remedy in _SQLITE_REMEDIES.items():
            if name.startswith(prefix):
                return remedy
        if name.startswith("SQLITE_IOERR"):
            return "check the disk"
    return "fix that"


def store_error(path: Path, exc: BaseException) -> StoreError:
    """`cannot write PATH: REASON` for an OSError or a sqlite3.Error met writing `path`."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return StoreError(
        f"cannot write {path}: {reason}", path=path, reason=reason, remedy=remedy_for(exc)
    )


class JournalError(RunnerError):
    """The journal is missing, unreadable or of another schema version."""


class IllegalTransitionError(RunnerError):
    """The lifecycle table has no move from `state` on `event` (a bug in the caller)."""

    def __init__(self, state: StrEnum, event: StrEnum) -> None:
        super().__init__(f"no transition from {state.value!r} on {event.value!r}")
        self.state = state
        self.event = event


# -- talking to a provider ---------------------------------------------------------------------


class ErrorKind(StrEnum):
    """What a non-2xx reply means, whatever the provider's spelling."""

    AUTH = "auth"  # bad or missing key: stop the provider
    CREDITS = "credits"  # out of credits / plan limit: stop submitting
    RATE_LIMITED = "rate_limited"  # slow down; not accepted
    BUSY = "busy"  # capacity (503 + retry hint, QUEUE_UNAVAILABLE, too many pending): not accepted
    TRANSIENT = "transient"  # 5xx without a hint: may or may not have been accepted
    NOT_FOUND = "not_found"
    GONE = "gone"  # 410: a single-use result already fetched or expired
    INVALID = "invalid"  # the request itself is wrong: do not retry unchanged
    OTHER = "other"


class TransportError(RunnerError):
    """The request got no HTTP answer. `sent=False` when it provably never reached the
    server (the connection was refused or never established); `reason` says why in a few
    words (`connection refused`, `host not found`, ...)."""

    def __init__(self, message: str, *, sent: bool, reason: str | None = None) -> None:
        super().__init__(message)
        self.sent = sent
        self.reason = reason or ("could not connect" if not sent else "connection lost")


class ReplyError(RunnerError):
    """A reply arrived but cannot be used: past its size cap, an undecodable encoding, a
    redirect loop. Not worth retrying unchanged."""


class TooLargeError(ReplyError):
    """A reply or a download exceeded its size cap (counted after decompression)."""


class ProviderCallError(RunnerError):
    """A call to a provider failed; `kind` says what the caller does about it.

    `not_accepted` is True only when the provider provably did not act on the request
    (refused connection, 429, 503 with a retry hint, busy codes, auth/credit/validation
    refusals): the one case where a submit may be sent again.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        job_id: str | None,
        kind: ErrorKind,
        status_code: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        not_accepted: bool = False,
        network: str | None = None,
        offsite: bool = False,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.job_id = job_id
        self.kind = kind
        self.status_code = status_code
        self.code = code
        self.retry_after = retry_after
        self.not_accepted = not_accepted
        self.network = network  # no HTTP answer: why, in a few words (TransportError.reason)
        self.offsite = offsite  # from a host that is not the provider's API (storage)

    def as_not_accepted(self) -> ProviderCallError:
        """The same failure, known to have started nothing: for an adapter whose call was
        one step of a submit that creates no remote job by itself (a Lobstr squid or task),
        so the submit may be sent again whatever became of that call."""
        return ProviderCallError(
            str(self),
            provider=self.provider,
            job_id=self.job_id,
            kind=self.kind,
            status_code=self.status_code,
            code=self.code,
            retry_after=self.retry_after,
            not_accepted=True,
            network=self.network,
            offsite=self.offsite,
        )


class StoreLostError(ProviderCallError):
    """A request that needed the shared rate store, which is lost: it was not sent."""


class NotCancellableError(RunnerError):
    """`cancel` of a job its provider cannot cancel: nothing was sent, the remote job goes on.

    Callers record that truthfully (detached, or left resumable), never as cancelled."""


class NotSubmittedError(RunnerError):
    """Raised by an adapter's `reconcile` when the provider's own listing proves the job was
    never created (e.g. the job's own Lobstr squid has no run): it is safe to submit again."""


# -- record and move on ----------------------------------------------------------------------


class JobFailedError(RunnerError):
    """This job cannot succeed; the batch goes on."""


class ProviderResponseError(JobFailedError):
    """The provider answered something we cannot use; carries an excerpt of the payload."""

    def __init__(self, message: str, excerpt: str = "") -> None:
        super().__init__(f"{message}: {excerpt}" if excerpt else message)
        self.excerpt = excerpt
