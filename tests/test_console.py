"""Console output: terse lines off a TTY; errors, failed jobs and the summary when quiet."""

from __future__ import annotations

import io
from pathlib import Path

from runner.batch.console import Console, summary_line
from runner.lifecycle import Event, JobRecord, State, advance
from runner.remote import RemoteRef, RemoteState, Status
from tests.test_results import make_plan


def _drive(console: Console) -> None:
    plan = make_plan(2)
    console.start(len(plan.jobs))
    ok, bad = (JobRecord(spec=spec) for spec in plan.jobs)

    def move(job: JobRecord, event: Event) -> None:
        previous = job.state
        job.state = advance(job.state, event)
        console.transition(job, event, previous)

    move(ok, Event.SUBMIT)
    ok.remote = RemoteRef("sp-1")
    move(ok, Event.QUEUED)
    console.polled(ok, Status(RemoteState.RUNNING, raw="running"))
    console.request()
    console.request(throttled=True)
    console.provider_paused("spidra", 30.0, "rate limited (429)")
    move(ok, Event.RUNNING)
    move(ok, Event.FINISHED)
    move(ok, Event.FETCHED)
    move(bad, Event.SUBMIT)
    bad.error = "rejected: urls[0] is not a URL"
    move(bad, Event.REJECTED)
    console.provider_stopped("pulse", "API key refused (PULSE_API_KEY)")
    console.summary(
        summary_line(
            "nightly",
            "20261122T030000Z",
            console.counts,
            elapsed=125.0,
            path=Path("results/nightly/20261122T030000Z"),
            exit_code=1,
        )
    )


def test_one_line_per_notable_event_off_a_tty() -> None:
    stream = io.StringIO()
    console = Console(stream=stream, tty=False)
    _drive(console)
    assert stream.getvalue().splitlines() == [
        "job-0 submitted to spidra (remote id sp-1)",
        "spidra paused for 30s: rate limited (429)",
        "job-0 succeeded",
        "job-1 failed: rejected: urls[0] is not a URL",
        "pulse stopped: API key refused (PULSE_API_KEY)",
        "nightly 20261122T030000Z: 1 succeeded, 1 failed in 2m05s; "
        "results in results/nightly/20261122T030000Z (exit 1)",
    ]
    assert console.counts == {"succeeded": 1, "failed": 1}
    assert (console.requests, console.throttled) == (2, 1)


def test_quiet_prints_only_errors_failed_jobs_and_the_summary() -> None:
    stream = io.StringIO()
    _drive(Console(stream=stream, quiet=True, tty=True))
    assert stream.getvalue().splitlines() == [
        "job-1 failed: rejected: urls[0] is not a URL",
        "pulse stopped: API key refused (PULSE_API_KEY)",
        "nightly 20261122T030000Z: 1 succeeded, 1 failed in 2m05s; "
        "results in results/nightly/20261122T030000Z (exit 1)",
    ]


def test_a_tty_gets_a_progress_display_with_states_and_requests() -> None:
    stream = io.StringIO()
    stream.isatty = lambda: True  # type: ignore[method-assign]
    console = Console(stream=stream)
    assert console.tty
    _drive(console)
    out = stream.getvalue()
    assert "2/2" in out
    assert "1 succeeded 1 failed" in out
    assert "2 req · 1 throttled" in out
    assert "job-1 failed: rejected: urls[0] is not a URL" in out
    assert "job-0 submitted" not in out  # the bar shows it; no line per submit
    assert out.rstrip().endswith("(exit 1)")


def test_resume_starts_from_the_journal_counts() -> None:
    console = Console(stream=io.StringIO(), tty=False)
    console.start(5, {State.SUCCEEDED.value: 3, State.RUNNING.value: 2})
    assert console.counts == {"succeeded": 3, "running": 2}


def test_summary_of_an_empty_batch() -> None:
    line = summary_line("n", "b", {}, elapsed=0.5, path=Path("r"), exit_code=0)
    assert line == "n b: no jobs in 0.5s; results in r (exit 0)"


def test_secrets_never_reach_the_console() -> None:
    stream = io.StringIO()
    console = Console(stream=stream, tty=False, secrets=["sk-live-SECRET", ""])
    job = JobRecord(spec=make_plan(1).jobs[0], state=State.SUBMITTING)
    job.state, job.error = State.FAILED, "HTTP 400: bad key sk-live-SECRET"
    console.transition(job, Event.REJECTED, State.SUBMITTING)
    console.provider_stopped("spidra", "key sk-live-SECRET refused")
    console.error("crashed near sk-live-SECRET")
    assert stream.getvalue().splitlines() == [
        "job-0 failed: HTTP 400: bad key ***",
        "spidra stopped: key *** refused",
        "runner: error: crashed near ***",
    ]
