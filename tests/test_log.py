"""The batch log: JSON lines with sorted keys, dotted events, bound ids, secrets redacted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runner.lifecycle import Event, JobRecord, State, advance
from runner.remote import RemoteRef, RemoteState, Status
from runner.store.log import BatchLog, LogRecorder, event_name
from tests.test_results import make_plan

SECRET = "sk-live-SECRET"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _log(tmp_path: Path) -> BatchLog:
    return BatchLog(
        tmp_path / "log.jsonl", batch_id="20261122T030000Z", secrets=[SECRET], clock=lambda: 0.25
    )


def test_lines_are_sorted_json_with_timestamp_level_and_batch_id(tmp_path: Path) -> None:
    with _log(tmp_path) as log:
        log.logger.info("batch.started", jobs=2)
        log.provider("spidra").warning("provider.paused", seconds=30.0)
    raw = (tmp_path / "log.jsonl").read_text("utf-8").splitlines()
    assert raw == [
        '{"batch_id": "20261122T030000Z", "event": "batch.started", "jobs": 2, '
        '"level": "info", "timestamp": "1970-01-01T00:00:00.250Z"}',
        '{"batch_id": "20261122T030000Z", "event": "provider.paused", "level": "warning", '
        '"provider": "spidra", "seconds": 30.0, "timestamp": "1970-01-01T00:00:00.250Z"}',
    ]


def test_every_line_is_on_disk_as_soon_as_it_is_logged(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log.logger.info("batch.started")
    assert len(_lines(tmp_path / "log.jsonl")) == 1  # not waiting for close()
    log.close()


def test_secrets_are_redacted_everywhere_even_nested(tmp_path: Path) -> None:
    class Leaky:
        def __repr__(self) -> str:
            return f"Leaky(key={SECRET})"

        __str__ = __repr__

    with _log(tmp_path) as log:
        log.logger.error(
            f"oops {SECRET}",
            message=f"Authorization: Bearer {SECRET}",
            nested={"deeper": [{"header": f"x{SECRET}y"}], SECRET: 1},
            obj=Leaky(),
            items=(SECRET,),
        )
        try:
            raise RuntimeError(f"failed with {SECRET}")
        except RuntimeError:
            log.logger.exception("batch.crashed")
    raw = (tmp_path / "log.jsonl").read_text("utf-8")
    assert SECRET not in raw
    first, second = _lines(tmp_path / "log.jsonl")
    assert first["event"] == "oops ***"
    assert first["message"] == "Authorization: Bearer ***"
    assert first["nested"] == {"deeper": [{"header": "x***y"}], "***": 1}
    assert first["obj"] == "Leaky(key=***)"
    assert first["items"] == ["***"]
    assert "RuntimeError: failed with ***" in second["exception"]


def test_recorder_maps_a_job_life_to_dotted_events(tmp_path: Path) -> None:
    plan = make_plan(1)
    job = JobRecord(spec=plan.jobs[0])
    with _log(tmp_path) as log:
        recorder = LogRecorder(log)

        def move(event: Event) -> None:
            previous = job.state
            job.state = advance(job.state, event)
            recorder.transition(job, event, previous)

        job.attempts = 1
        move(Event.SUBMIT)
        job.remote = RemoteRef("sp-1")
        job.raw_status = "waiting"
        move(Event.QUEUED)
        job.raw_status, job.progress, job.polls = "running", 0.5, 1
        move(Event.RUNNING)
        recorder.polled(job, Status(RemoteState.RUNNING, raw="running", progress=0.5))
        job.raw_status, job.progress = "completed", 1.0
        move(Event.FINISHED)
        move(Event.FETCHED)
    events = _lines(tmp_path / "log.jsonl")
    assert [(e["event"], e["level"]) for e in events] == [
        ("job.submitting", "info"),
        ("job.submitted", "info"),
        ("job.running", "info"),
        ("job.polled", "debug"),
        ("job.fetching", "info"),
        ("job.succeeded", "info"),
    ]
    assert all(e["job_id"] == "job-0" and e["provider"] == "spidra" for e in events)
    assert events[1] == {
        "batch_id": "20261122T030000Z",
        "event": "job.submitted",
        "from_state": "submitting",
        "job_id": "job-0",
        "level": "info",
        "provider": "spidra",
        "raw_status": "waiting",
        "remote_id": "sp-1",
        "state": "queued",
        "timestamp": "1970-01-01T00:00:00.250Z",
        "trigger": "observed_queued",
    }
    assert events[3]["polls"] == 1
    assert events[3]["remote_state"] == "running"


def test_event_names_for_every_kind_of_ending() -> None:
    assert event_name(Event.REJECTED, State.SUBMITTING, State.FAILED) == "job.failed"
    assert event_name(Event.AMBIGUOUS, State.SUBMITTING, State.SUBMIT_UNKNOWN) == (
        "job.submit_unknown"
    )
    assert event_name(Event.FINISHED, State.SUBMITTING, State.FETCHING) == "job.submitted"
    assert event_name(Event.DEFERRED, State.SUBMITTING, State.PLANNED) == "job.deferred"
    assert event_name(Event.RECONCILED, State.SUBMIT_UNKNOWN, State.QUEUED) == "job.reconciled"
    assert event_name(Event.TIMEOUT, State.RUNNING, State.TIMED_OUT) == "job.timed_out"
    assert event_name(Event.SKIP, State.PLANNED, State.SKIPPED) == "job.skipped"
    assert event_name(Event.GONE, State.FETCHING, State.EXPIRED) == "job.expired"


def test_failures_are_warnings_and_the_level_filter_drops_polls(tmp_path: Path) -> None:
    plan = make_plan(1)
    job = JobRecord(spec=plan.jobs[0], state=State.SUBMITTING)
    log = BatchLog(tmp_path / "log.jsonl", batch_id="b", level="info")
    recorder = LogRecorder(log)
    recorder.polled(job, Status(RemoteState.RUNNING, raw="running"))
    job.state, job.error = State.FAILED, "rejected: bad params"
    recorder.transition(job, Event.REJECTED, State.SUBMITTING)
    log.close()
    events = _lines(tmp_path / "log.jsonl")
    assert [(e["event"], e["level"], e["error"]) for e in events] == [
        ("job.failed", "warning", "rejected: bad params")
    ]


def test_a_line_without_secrets_is_rendered_once_and_the_same(tmp_path: Path) -> None:
    """The fast path (render, search the line) writes what the redacting path would."""
    from runner.store.log import RenderRedacted

    fast, slow = RenderRedacted([SECRET]), RenderRedacted(["k"])  # "k": too short to search
    event = {"event": "x", "tags": ("a", "b"), "path": Path("/r/x"), "n": 1, "set": {"s"}}
    assert fast(None, "info", dict(event)) == slow(None, "info", dict(event))
    assert json.loads(fast(None, "info", dict(event)))["path"] == "/r/x"


def test_a_short_or_escaped_secret_is_redacted_in_every_string(tmp_path: Path) -> None:
    from runner.store.log import RenderRedacted

    quoted = 'sk-"quoted"-key'  # JSON writes it escaped: the line search cannot see it
    render = RenderRedacted([quoted, "k"])
    line = render(None, "info", {"event": "e", "a": f"x {quoted} y", "b": "k\nk"})
    assert "quoted" not in line
    assert json.loads(line)["b"] == "***\n***"
