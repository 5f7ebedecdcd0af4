"""The one exception tree, split by what the caller does: fix, retry, or record and move on."""

from __future__ import annotations

from dataclasses import dataclass


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


class ManifestError(RunnerError):
    """The manifest is invalid; carries every problem found, sorted by position."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(p.render() for p in self.problems))


class UsageError(RunnerError):
    """The command line is wrong (exit 2)."""


class LockHeldError(RunnerError):
    """Another run holds this manifest's lock (exit 4)."""


# -- retry -----------------------------------------------------------------------------------


class TransientError(RunnerError):
    """Worth retrying later: connection trouble, 5xx, timeouts."""


class RateLimitedError(TransientError):
    """The provider said slow down (429, or 503 with a retry hint)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- record and move on ----------------------------------------------------------------------


class JobFailedError(RunnerError):
    """This job cannot succeed; the batch goes on."""


class ProviderResponseError(JobFailedError):
    """The provider answered something we cannot use; carries an excerpt of the payload."""

    def __init__(self, message: str, excerpt: str = "") -> None:
        super().__init__(f"{message}: {excerpt}" if excerpt else message)
        self.excerpt = excerpt


class ProviderStoppedError(RunnerError):
    """The provider refuses all further work of this kind (bad key, no credits)."""


class AuthError(ProviderStoppedError):
    """The API key was refused: stop every remaining job of that provider."""


class CreditsExhaustedError(ProviderStoppedError):
    """Credits ran out: stop submitting to that provider."""


class SubmitUnknownError(RunnerError):
    """A submit may or may not have been accepted; it must not be blindly re-sent."""


class NotSubmittedError(RunnerError):
    """Raised by an adapter's `reconcile` when the provider's own listing proves the job was
    never created (e.g. the job's own Lobstr squid has no run): it is safe to submit again."""
