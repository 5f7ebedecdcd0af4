"""Human output on stderr, separate from the log: a rich progress display on a TTY, one terse
line per notable event otherwise, and with `quiet` (cron) only errors, the jobs that did not
succeed, and the summary line.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rich.console import Console as RichConsole
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

from runner.durations import format_duration
from runner.lifecycle import UNSUCCESSFUL, Event, JobRecord, Recorder, State
from runner.remote import Status
from runner.store.log import event_name
from runner.store.redaction import redact


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def summary_line(
    name: str,
    batch_id: str,
    counts: Mapping[str, int],
    *,
    elapsed: float,
    path: Path,
    exit_code: int,
) -> str:
    """`nightly 20261122T030000Z: 3 succeeded, 1 failed in 2m05s; results in DIR (exit 1)`."""
    parts = [f"{counts[s.value]} {s.value}" for s in State if counts.get(s.value)]
    states = ", ".join(parts) or "no jobs"
    return (
        f"{name} {batch_id}: {states} in {format_duration(elapsed)}; "
        f"results in {path} (exit {exit_code})"
    )


class Console:
    """A `runner.lifecycle.Recorder` for people, plus provider events and the summary.

    `tty=None` decides by `stream.isatty()`. Thin on purpose: it counts and prints, nothing
    else; the log is the record.
    """

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        quiet: bool = False,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        secrets: Sequence[str] = (),
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        # Job errors can quote a provider's payload, and a provider may echo the key.
        self._secrets = tuple(s for s in secrets if s)
        self.quiet = quiet
        self.tty = (self._stream.isatty() if tty is None else tty) and not quiet
        self._clock = clock
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self.throttled = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._started = clock()

    # -- lifecycle of the display ------------------------------------------------------------

    def start(self, total: int, counts: Mapping[str, int] | None = None) -> None:
        """Begin: `total` jobs, with their current states when resuming (else all planned)."""
        self._started = self._clock()
        self.counts = Counter(counts or {State.PLANNED.value: total})
        if not self.tty:
            return
        rich = RichConsole(file=self._stream, force_terminal=True, stderr=True)
        self._progress = Progress(
            TextColumn("[bold]jobs"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[states]}"),
            TextColumn("· {task.fields[requests]} req · {task.fields[throttled]} throttled"),
            TimeRemainingColumn(),
            console=rich,
            transient=False,
        )
        self._task = self._progress.add_task(
            "jobs", total=total, completed=self._done(), states="", requests=0, throttled=0
        )
        self._progress.start()
        self._refresh()

    def close(self) -> None:
        """Stop the display; safe to call again, and when the stream refuses the last
        frame (stderr redirected to a file on a full disk)."""
        if self._progress is not None:
            progress, self._progress = self._progress, None
            with contextlib.suppress(OSError):
                self._refresh_with(progress)
                progress.stop()

    # -- Recorder ----------------------------------------------------------------------------

    def transition(self, job: JobRecord, event: Event, previous: State) -> None:
        self.counts[previous.value] -= 1
        if self.counts[previous.value] <= 0:
            del self.counts[previous.value]
        self.counts[job.state.value] += 1
        self._refresh()
        name = event_name(event, previous, job.state)
        if job.state in UNSUCCESSFUL:
            detail = job.error or job.reason or job.raw_status or "no reason given"
            # Shown under --quiet too: cron mail names the jobs that did not succeed (README).
            self._notable(f"{job.spec.id} {job.state.value}: {detail}", error=True)
        elif name == "job.submitted" and not self.tty:
            remote = f" (remote id {job.remote.id})" if job.remote is not None else ""
            self._notable(f"{job.spec.id} submitted to {job.spec.provider}{remote}")
        elif job.state is State.SUCCEEDED and not self.tty:
            self._notable(f"{job.spec.id} succeeded" + (" (partial)" if job.partial else ""))

    def polled(self, job: JobRecord, status: Status) -> None:
        """Polls are not notable; the display refreshes on its own."""

    def noted(self, job: JobRecord, key: str) -> None:
        """An adapter's bookkeeping is not notable."""

    # -- provider-level events ---------------------------------------------------------------

    def request(self, *, throttled: bool = False) -> None:
        """Count one HTTP request (and whether it was answered 429) for the display."""
        self.requests += 1
        if throttled:
            self.throttled += 1

    def provider_paused(self, provider: str, seconds: float, reason: str) -> None:
        self._notable(f"{provider} paused for {format_duration(seconds)}: {reason}")

    def provider_stopped(self, provider: str, message: str) -> None:
        self._notable(f"{provider} stopped: {message}", error=True)

    def notice(self, text: str, *, error: bool = False) -> None:
        """One notable line as given (shown under `quiet` only when `error`)."""
        self._notable(text, error=error)

    def error(self, message: str) -> None:
        self._notable(f"runner: error: {message}", error=True)

    def summary(self, line: str) -> None:
        """The final line; printed in every mode (cron mails it)."""
        self.close()
        print(line, file=self._stream, flush=True)

    # -- internals ---------------------------------------------------------------------------

    def _done(self) -> int:
        return sum(n for state, n in self.counts.items() if State(state).terminal)

    def _notable(self, text: str, *, error: bool = False) -> None:
        if self.quiet and not error:
            return
        text = redact(text, self._secrets)
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self._stream, flush=True)

    def _refresh(self) -> None:
        if self._progress is not None:
            self._refresh_with(self._progress)

    def _refresh_with(self, progress: Progress) -> None:
        if self._task is None:
            return
        states = " ".join(f"{n} {s.value}" for s in State if (n := self.counts.get(s.value)))
        progress.update(
            self._task,
            completed=self._done(),
            states=states,
            requests=self.requests,
            throttled=self.throttled,
        )


if TYPE_CHECKING:  # mypy proves Console is a Recorder

    def _is_recorder(recorder: Console) -> Recorder:
        return recorder
