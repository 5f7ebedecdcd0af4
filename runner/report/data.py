"""What a report shows, read from a batch directory: jobs and their times from the journal
(opened read-only: a live run keeps writing it, WAL), polls, load samples, pauses, limits
and the estimate from log.jsonl (complete lines only), the rest from batch.json.

Takes no lock and writes nothing: `runner report` may run beside the batch it draws.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from runner.errors import JournalError, UsageError
from runner.lifecycle import Event, State
from runner.store.journal import Journal
from runner.store.results import BATCH, JOURNAL, LOG, MANIFEST, no_journal

# The log lines the report reads, found by regular expression over whole chunks of the file
# (a 100,000-job log is a million lines). Poll lines, the bulk, are read without parsing
# their JSON: structlog writes `"key": value` with sorted keys, and job ids are slugs.
_POLLS = re.compile(
    rb'"event": "job\.polled"[^\n]*?"job_id": "([^"\\\n]*)"[^\n]*?"timestamp": "([^"\\\n]*)"'
)
_OTHERS = re.compile(rb'"event": "(?:provider|batch)\.')
CHUNK = 8 << 20


@dataclass(slots=True)
class JobLine:
    """One job's current attempt: when it was sent, finished remotely, ended; its polls."""

    job_id: str
    provider: str
    type: str
    state: State
    submitted: float | None = None  # unix seconds of the attempt's first submit
    fetching: float | None = None  # the provider said finished: downloading from here
    ended: float | None = None  # terminal
    polls: list[float] = field(default_factory=list)
    error: str | None = None
    reason: str | None = None
    raw_status: str | None = None
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Sample:
    """A `provider.load` line: totals since the run (or resume) started, and gauges."""

    time: float
    sent: int
    throttled: int
    in_flight: int
    cap: int | None
    paced: float | None


@dataclass(frozen=True, slots=True)
class Pause:
    """A provider-wide stop: a 429 pause (`throttle`) or an outage (`outage`)."""

    provider: str
    kind: str
    start: float
    end: float | None  # None: still going when the log ends
    cause: str


@dataclass(frozen=True, slots=True)
class Limits:
    per_second: float | None  # the provider-wide budget, requests per second
    text: str  # as declared, e.g. "300 / 15m, burst 1"
    in_flight: int | None


@dataclass(frozen=True, slots=True)
class Estimate:
    expected_seconds: float
    limits_only_seconds: float
    providers: dict[str, dict[str, Any]]


@dataclass(slots=True)
class Notice:
    time: float
    provider: str
    event: str
    message: str


@dataclass(slots=True)
class BatchData:
    path: Path
    name: str
    batch_id: str
    started: float  # unix seconds
    ended: float | None  # None while it runs (or if it was killed)
    exit_code: int | None
    generated: float
    jobs: list[JobLine]
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    pauses: list[Pause] = field(default_factory=list)
    limits: dict[str, Limits] = field(default_factory=dict)
    estimate: Estimate | None = None
    notices: list[Notice] = field(default_factory=list)
    runs: list[tuple[float, str]] = field(default_factory=list)  # batch.started/resumed/...

    @property
    def providers(self) -> list[str]:
        """Providers in the order their first job appears in the plan."""
        seen: dict[str, None] = {}
        for job in self.jobs:
            seen.setdefault(job.provider, None)
        return list(seen)

    @property
    def last_time(self) -> float:
        """The right edge of every chart: the end, or the latest thing seen."""
        if self.ended is not None:
            return max(self.ended, self.started)
        moments = [self.started]
        moments += [j.ended or j.fetching or j.submitted or 0.0 for j in self.jobs]
        moments += [s[-1].time for s in self.samples.values() if s]
        return max(moments)


_SECONDS: dict[str, float] = {}  # "2026-12-02T16:35:06" → unix seconds (a log repeats them)


def _unix(stamp: Any) -> float | None:
    """Unix seconds of the log's `2026-12-02T16:35:06.123Z` (any ISO 8601 also)."""
    if not isinstance(stamp, str):
        return None
    if len(stamp) == 24 and stamp[19] == "." and stamp[23] == "Z":
        whole = _SECONDS.get(stamp[:19])
        if whole is None:
            with contextlib.suppress(ValueError):
                whole = datetime.fromisoformat(stamp[:19] + "+00:00").timestamp()
                _SECONDS[stamp[:19]] = whole
        if whole is not None and stamp[20:23].isdigit():
            return whole + int(stamp[20:23]) / 1000
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return None


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _rate_text(rate: dict[str, Any]) -> str:
    text = f"{float(rate['rate']):g} / {_duration(float(rate['per']))}"
    if int(rate.get("burst", 1)) > 1:
        text += f", burst {rate['burst']}"
    return text


def _limits(fields: dict[str, Any]) -> Limits:
    """The `provider.limits` line: the provider-wide budget (drawn), and every endpoint
    class's (said in words)."""
    requests = fields.get("requests")
    per_second = None
    texts = []
    if isinstance(requests, dict):
        per_second = float(requests["rate"]) / float(requests["per"])
        texts.append(_rate_text(requests))
    endpoints = fields.get("endpoints")
    if isinstance(endpoints, dict):
        texts += [f"{name} {_rate_text(rate)}" for name, rate in sorted(endpoints.items())]
    in_flight = fields.get("in_flight")
    return Limits(
        per_second,
        "; ".join(texts) or "none declared",
        in_flight if isinstance(in_flight, int) else None,
    )


def complete_chunks(path: Path, size: int = CHUNK) -> Iterator[bytes]:
    """A file being appended to, in chunks of whole lines, up to its last complete line."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        rest = b""
        while block := handle.read(size):
            block = rest + block
            end = block.rfind(b"\n") + 1
            rest = block[end:]
            if end:
                yield block[:end]


class _LogReader:
    """Folds log.jsonl into the BatchData (one pass, only the lines it needs parsed)."""

    def __init__(self, data: BatchData, jobs: dict[str, JobLine]) -> None:
        self.data = data
        self.jobs = jobs
        self.outages: dict[str, Pause] = {}

    def read(self, path: Path) -> None:
        for chunk in complete_chunks(path):
            for job_id, stamp in _POLLS.findall(chunk):
                self.poll(job_id.decode(), _unix(stamp.decode()))
            for found in _OTHERS.finditer(chunk):
                start = chunk.rfind(b"\n", 0, found.start()) + 1
                line = chunk[start : chunk.find(b"\n", found.end())]
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    self.take(entry)
        for pause in self.outages.values():  # never reachable again in this log
            self.data.pauses.append(pause)

    def poll(self, job_id: str, moment: float | None) -> None:
        job = self.jobs.get(job_id)
        if job is None or moment is None:
            return
        if job.submitted is None or moment >= job.submitted:  # this attempt's polls
            job.polls.append(moment)

    def take(self, entry: dict[str, Any]) -> None:
        event = entry.get("event")
        moment = _unix(entry.get("timestamp"))
        if moment is None or not isinstance(event, str):
            return
        provider = entry.get("provider")
        if event == "provider.load" and isinstance(provider, str):
            self.data.samples.setdefault(provider, []).append(
                Sample(
                    moment,
                    int(entry.get("sent", 0)),
                    int(entry.get("throttled", 0)),
                    int(entry.get("in_flight", 0)),
                    entry.get("cap"),
                    entry.get("paced"),
                )
            )
        elif event == "provider.paused" and isinstance(provider, str):
            seconds = float(entry.get("seconds", 0.0))
            cause = str(entry.get("reason", "paused"))
            self.data.pauses.append(Pause(provider, "throttle", moment, moment + seconds, cause))
        elif event == "provider.unreachable" and isinstance(provider, str):
            since = _unix(entry.get("since")) or moment
            if provider not in self.outages:
                cause = str(entry.get("reason") or entry.get("message", "unreachable"))
                self.outages[provider] = Pause(provider, "outage", since, None, cause)
            self._notice(moment, provider, event, entry)
        elif event == "provider.reachable" and isinstance(provider, str):
            began = self.outages.pop(provider, None)
            if began is not None:
                self.data.pauses.append(Pause(provider, "outage", began.start, moment, began.cause))
            self._notice(moment, provider, event, entry)
        elif event == "provider.limits" and isinstance(provider, str):
            self.data.limits.setdefault(provider, _limits(entry))
        elif event == "batch.estimate" and self.data.estimate is None:
            self.data.estimate = Estimate(
                float(entry.get("expected_seconds", 0.0)),
                float(entry.get("limits_only_seconds", 0.0)),
                dict(entry.get("providers") or {}),
            )
        elif event in ("batch.started", "batch.resumed", "batch.retrying", "batch.cancelling"):
            self.data.runs.append((moment, event.removeprefix("batch.")))
        elif event.startswith("provider.") and isinstance(provider, str):
            self._notice(moment, provider, event, entry)

    def _notice(self, moment: float, provider: str, event: str, entry: dict[str, Any]) -> None:
        message = entry.get("message")
        if isinstance(message, str):
            self.data.notices.append(Notice(moment, provider, event, message))


def _read_info(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        found = json.loads((path / BATCH).read_text("utf-8"))
        if isinstance(found, dict):
            return found
    return {}


def _jobs(journal: Journal) -> dict[str, JobLine]:
    """Every job in plan order, its current attempt's times from the journal's events."""
    attempts = journal.attempts()
    jobs = {
        row.job_id: JobLine(
            job_id=row.job_id,
            provider=row.provider,
            type=row.type,
            state=row.state,
            ended=row.finished_at if row.state.terminal else None,
            error=row.error,
            reason=row.reason,
            raw_status=row.raw_status,
            attempt=attempts.get(row.job_id, 1),
        )
        for row in journal.rows()
    }
    terminal = {state.value for state in State if state.terminal}
    retry, submit, fetching = Event.RETRY.value, Event.SUBMIT.value, State.FETCHING.value
    for moment, job_id, event, to_state in journal.moments():
        job = jobs.get(job_id)
        if job is None:
            continue
        if event == retry:  # a new attempt: its times start again
            job.submitted = job.fetching = None
        elif event == submit and job.submitted is None:
            job.submitted = moment
        elif to_state == fetching:
            job.fetching = moment
        if to_state in terminal and job.state.terminal and job.ended is None:
            job.ended = moment  # an older journal without finished_at
    return jobs


def read_batch(path: Path, *, now: float | None = None) -> BatchData:
    """Everything the report draws, from the batch directory `path`."""
    try:
        journal = Journal.open(path / JOURNAL, readonly=True)
    except JournalError as exc:
        raise UsageError(no_journal(path, exc)) from exc
    try:
        meta = journal.meta()
        jobs = _jobs(journal)
    finally:
        journal.close()
    info = _read_info(path)
    batch_id = meta.get("batch_id", path.name)
    started = _unix(info.get("started"))
    if started is None:
        with contextlib.suppress(ValueError):
            started = datetime.strptime(batch_id[:16] + "+0000", "%Y%m%dT%H%M%SZ%z").timestamp()
    first = min((j.submitted for j in jobs.values() if j.submitted is not None), default=None)
    exit_code = info.get("exit_code")
    data = BatchData(
        path=path,
        name=meta.get("name", path.parent.name),
        batch_id=batch_id,
        started=started if started is not None else (first or time.time()),
        ended=_unix(info.get("ended")),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        generated=time.time() if now is None else now,
        jobs=list(jobs.values()),
    )
    _LogReader(data, jobs).read(path / LOG)
    data.pauses.sort(key=lambda p: (p.provider, p.start))
    return data


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def manifest_secrets(path: Path, env: Mapping[str, str]) -> list[str]:
    """The values, in `env`, of every `${VAR}` the batch's manifest copy names: the keys
    the log redacted, redacted again here (a report is made where the keys are set)."""
    try:
        text = (path / MANIFEST).read_text("utf-8", errors="replace")
    except OSError:
        return []
    return [env[name] for name in sorted(set(_VARIABLE.findall(text))) if env.get(name)]
