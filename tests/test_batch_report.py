"""The end-of-run lines about jobs that did not succeed: named, bounded, grouped."""

from __future__ import annotations

from runner.batch.run import Hints, unsucceeded_lines
from runner.lifecycle import JobRecord, State
from runner.plan import JobSpec, PollPolicy

POLL = PollPolicy(1.0, 2.0, 2.0)
HINTS = Hints(resume="runner resume results/n/B", start_over="runner run m.yaml --sandbox")
STATUS = "runner status results/n/B"


def record(job_id: str, provider: str, state: State, error: str | None = None) -> JobRecord:
    spec = JobSpec(job_id, provider, "extract", {}, timeout=60.0, poll=POLL, index=0)
    return JobRecord(spec, state=state, error=error)


def test_each_job_that_ended_badly_is_named_with_its_error() -> None:
    records = [
        record("a", "pulse", State.SUCCEEDED),
        record("b", "pulse", State.FAILED, "HTTP 400: bad file"),
        record("c", "spidra", State.TIMED_OUT),
    ]
    assert unsucceeded_lines(records, HINTS, status=STATUS) == [
        "  b: failed: HTTP 400: bad file",
        "  c: timed_out",
    ]


def test_past_the_limit_the_rest_are_counted_and_status_shows_them() -> None:
    records = [record(f"j{i}", "pulse", State.FAILED, "x") for i in range(25)]
    lines = unsucceeded_lines(records, HINTS, status=STATUS, limit=20)
    assert len(lines) == 21
    assert lines[-1] == "  … and 5 more that did not succeed: runner status results/n/B"


def test_unfinished_jobs_are_one_line_per_provider_with_the_command_that_continues() -> None:
    # a provider that never answered leaves its jobs planned: no wall of identical lines
    records = [record(f"p{i}", "pulse", State.PLANNED) for i in range(300)]
    records += [record("q", "spidra", State.RUNNING), record("r", "spidra", State.PLANNED)]
    assert unsucceeded_lines(records, HINTS, status=STATUS) == [
        "  pulse: 300 job(s) not finished (300 planned); runner resume results/n/B continues them",
        "  spidra: 2 job(s) not finished (1 planned, 1 running); "
        "runner resume results/n/B continues them",
    ]


def test_an_in_process_sandbox_batch_offers_no_resume() -> None:
    hints = Hints(resume=None, start_over="runner run m.yaml --sandbox")
    lines = unsucceeded_lines([record("p", "pulse", State.PLANNED)], hints, status=STATUS)
    assert lines == ["  pulse: 1 job(s) not finished (1 planned)"]
