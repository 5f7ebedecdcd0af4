"""The structured log of one batch: structlog JSON lines in log.jsonl, secrets redacted.

One pipeline per batch built with `structlog.wrap_logger` (no global configuration), and a
`LogRecorder` that turns lifecycle transitions and polls into dotted events. A line the disk
refuses is taken back whole and raised as a `StoreError` naming log.jsonl.
"""

from __future__ import annotations

import contextlib
import functools
import json
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


def format_exc_info(logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
    """structlog's `format_exc_info`, asked only when the event carries `exc_info` (it
    costs several µs per event even when there is none)."""
    if "exc_info" not in event:
        return event
    return structlog.processors.format_exc_info(logger, name, event)


def _plain(value: Any) -> Any:
    """What the JSON line holds for a value JSON has no type for (as `Redactor.tree`)."""
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


_dumps = functools.partial(json.dumps, sort_keys=True, ensure_ascii=False, default=_plain)


class RenderRedacted:
    """The final processor: the event as one JSON line, every secret replaced by `***`.

    Rendering first and searching the line once costs a fraction of redacting every string
    of the event (most lines hold no secret); a line where a secret shows is rendered again
    from the redacted event (`Redactor.tree`). The search on the line is exact only for
    secrets JSON writes as they are and that are replaced anywhere (`ANYWHERE` characters
    or more: real API keys); with any other secret every event takes the redacting path.
    """

    def __init__(self, secrets: Sequence[str]) -> None:
        self._redactor = redaction.Redactor(secrets)
        self._search = all(
            len(s) >= redaction.ANYWHERE and json.dumps(s, ensure_ascii=False)[1:-1] == s
            for s in secrets
            if s
        )

    def __call__(self, _: WrappedLogger, __: str, event: EventDict) -> str:
        line = _dumps(event)
        if not self._redactor or (self._search and not self._redactor.found(line)):
            return line
        return _dumps(self._redactor.tree(event))


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
            # where the next line starts: this writer is the file's only one (the batch lock)
            self._end = os.lseek(self._fd, 0, os.SEEK_END)
        except OSError as exc:
            raise store_error(path, exc) from exc
        self.failed: StoreError | None = None  # the first line the disk refused

    def msg(self, message: str) -> None:
        if self._fd is None:
            raise StoreError(f"cannot write {self.path}: it is closed", path=self.path)
        data = (message + "\n").encode("utf-8")
        start = self._end
        try:
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            self._end = start + written
        except OSError as exc:
            with contextlib.suppress(OSError):  # shrinking needs no space
                os.ftruncate(self._fd, start)
            with contextlib.suppress(OSError):
                self._end = os.lseek(self._fd, 0, os.SEEK_END)
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
            format_exc_info,
            RenderRedacted(secrets),
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
        fields["job_id"], fields["provider"] = job.spec.id, job.spec.provider  # as job() binds
        if job.state in UNSUCCESSFUL:
            self._log.logger.warning(name, **fields)
        else:
            self._log.logger.info(name, **fields)

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
        fields["job_id"], fields["provider"] = job.spec.id, job.spec.provider
        self._log.logger.debug("job.polled", polls=job.polls, **fields)


if TYPE_CHECKING:  # mypy proves LogRecorder is a Recorder

    def _is_recorder(recorder: LogRecorder) -> Recorder:
        return recorder
