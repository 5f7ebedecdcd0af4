"""The structured log of one batch: structlog JSON lines in log.jsonl, secrets redacted.

One pipeline per batch built with `structlog.wrap_logger` (no global configuration), and a
`LogRecorder` that turns lifecycle transitions and polls into dotted events. A line the disk
refuses is taken back whole and raised as a `StoreError` naming log.jsonl.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

from runner.errors import StoreError, store_error
from runner.lifecycle import UNSUCCESSFUL, Event, JobRecord, Recorder, State
from runner.remote import Status
from runner.store import redaction

# -- processors (pure functions of the event, structlog style) -------------------------------


def timestamper(clock: Callable[[], float]) -> Callable[[WrappedLogger, str, EventDict], EventDict]:
    """Adds `timestamp`: UTC ISO 8601 with milliseconds, from the injected clock."""

    def add_timestamp(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
        moment = datetime.fromtimestamp(clock(), UTC)
        event["timestamp"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return event

    return add_timestamp


class RedactSecrets:
    """Replaces every configured secret, wherever it occurs in any string of the event
    (nested dicts and lists too, keys included), with `***`. Values that are not plain JSON
    become their `str()` first, so a secret cannot hide in an object's repr."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self._redactor = redaction.Redactor(secrets)

    def __call__(self, _: WrappedLogger, __: str, event: EventDict) -> EventDict:
        if not self._redactor:
            return event
        return {self._redactor.text(str(k)): self._redactor.tree(v) for k, v in event.items()}


# -- the per-batch log -----------------------------------------------------------------------


class LineWriter:
    """structlog's final logger: one line per event, one write(2) each, nothing buffered.

    Unbuffered, so a write the disk refuses leaves nothing behind to fail again at close;
    a line cut short by the full disk is truncated away, so log.jsonl stays whole lines and
    a resumed batch appends after the last complete one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise store_error(path, exc) from exc
        self.failed: StoreError | None = None  # the first line the disk refused

    def msg(self, message: str) -> None:
        if self._fd is None:
            raise StoreError(f"cannot write {self.path}: it is closed", path=self.path)
        data = (message + "\n").encode("utf-8")
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            with contextlib.suppress(OSError):  # shrinking needs no space
                os.ftruncate(self._fd, start)
            error = store_error(self.path, exc)
            if self.failed is None:
                self.failed = error
            raise error from exc

    log = debug = info = warn = warning = msg
    err = error = critical = exception = fatal = failure = msg

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class BatchLog:
    """log.jsonl of one batch. `logger` is a structlog bound logger with `batch_id` bound.

    Flush policy: every line is written at once (`LineWriter`, unbuffered), so a killed
    process loses no line; that costs one write(2) per event, not an fsync.
    """

    def __init__(
        self,
        path: Path,
        *,
        batch_id: str,
        secrets: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        level: str = "debug",
    ) -> None:
        self.path = path
        self._writer = LineWriter(path)
        processors: list[Any] = [
            structlog.processors.add_log_level,
            timestamper(clock),
            structlog.processors.format_exc_info,
            RedactSecrets(secrets),
            structlog.processors.JSONRenderer(sort_keys=True, ensure_ascii=False),
        ]
        logger: FilteringBoundLogger = structlog.wrap_logger(
            self._writer,
            processors=processors,
            wrapper_class=structlog.make_filtering_bound_logger(level),
            cache_logger_on_first_use=True,
        )
        self.logger = logger.bind(batch_id=batch_id)

    def job(self, job: JobRecord) -> FilteringBoundLogger:
        """The logger with `job_id` and `provider` bound."""
        return self.logger.bind(job_id=job.spec.id, provider=job.spec.provider)

    def provider(self, name: str) -> FilteringBoundLogger:
        return self.logger.bind(provider=name)

    @property
    def failed(self) -> StoreError | None:
        """The first line the disk refused (None while every line was written)."""
        return self._writer.failed

    def close(self) -> None:
        """Safe after a failed write: nothing is buffered, so nothing fails again here."""
        self._writer.close()

    def __enter__(self) -> BatchLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the Recorder ----------------------------------------------------------------------------

_SPECIAL_EVENTS = {
    Event.SUBMIT: "job.submitting",
    Event.DEFERRED: "job.deferred",
    Event.RECONCILED: "job.reconciled",
    Event.RESUBMIT: "job.resubmitted",
    Event.RELEASE: "job.released",
}


def event_name(event: Event, previous: State, state: State) -> str:
    """The log event for a transition: `job.submitted` when a submit is answered with a
    remote job, `job.<new state>` otherwise (`job.succeeded`, `job.failed`, ...)."""
    special = _SPECIAL_EVENTS.get(event)
    if special is not None:
        return special
    accepted = state not in {State.FAILED, State.SKIPPED, State.SUBMIT_UNKNOWN}
    if previous is State.SUBMITTING and accepted:
        return "job.submitted"
    return f"job.{state.value}"


class LogRecorder:
    """A `runner.lifecycle.Recorder` that writes one event per transition and per poll."""

    def __init__(self, log: BatchLog) -> None:
        self._log = log

    def transition(self, job: JobRecord, event: Event, previous: State) -> None:
        name = event_name(event, previous, job.state)
        fields: dict[str, Any] = {
            "trigger": event.value,
            "from_state": previous.value,
            "state": job.state.value,
        }
        if job.remote is not None:
            fields["remote_id"] = job.remote.id
        if event is Event.SUBMIT:
            fields["attempt"] = job.attempts
        for key in ("raw_status", "reason", "error", "progress"):
            value = getattr(job, key)
            if value is not None:
                fields[key] = value
        if job.partial:
            fields["partial"] = True
        logger = self._log.job(job)
        if job.state in UNSUCCESSFUL:
            logger.warning(name, **fields)
        else:
            logger.info(name, **fields)

    def noted(self, job: JobRecord, key: str) -> None:
        self._log.job(job).debug("job.noted", key=key)

    def polled(self, job: JobRecord, status: Status) -> None:
        fields: dict[str, Any] = {"raw_status": status.raw, "remote_state": status.state.value}
        if status.progress is not None:
            fields["progress"] = status.progress
        if status.phase is not None:
            fields["phase"] = status.phase
        if job.next_poll_at is not None:
            fields["next_poll_at"] = job.next_poll_at
        self._log.job(job).debug("job.polled", polls=job.polls, **fields)


if TYPE_CHECKING:  # mypy proves LogRecorder is a Recorder

    def _is_recorder(recorder: LogRecorder) -> Recorder:
        return recorder
