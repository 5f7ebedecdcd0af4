"""What runner.engine.engine promises in its corners, found unguarded by the mutation run
(make mutate): provider notices word for word with their log fields, the pause clock, the
errors a failed submit, poll or reconcile leaves, the budget of poll errors, probes, and
the messages of a timeout. In process, on an injected clock and wall clock: no waiting."""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import anyio
import pytest

from runner.engine.engine import Engine
from runner.engine.outcomes import MAX_POLL_ERRORS
from runner.errors import ErrorKind, NotSubmittedError, ProviderCallError
from runner.http.backoff import RetryPolicy, retry_delay
from runner.lifecycle import Event, JobRecord, State
from runner.plan import JobSpec, Plan
from runner.providers.base import ProviderHttp
from runner.remote import RemoteRef
from tests.test_engine import FakeAdapter, FakeOutput, Recording, call_error, make_engine, make_plan

pytestmark = pytest.mark.anyio

WALL = 1_800_000_000.0  # 2027-01-15T08:00:00Z
T0 = 1000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class ManualClock:
    """The gate's monotonic clock, moved by hand; sleeping moves it at once."""

    def __init__(self, now: float = T0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


@dataclasses.dataclass
class Setup:
    engine: Engine
    output: FakeOutput
    rec: Recording
    clock: ManualClock
    notified: list[tuple[str, dict[str, Any]]]

    @property
    def lane(self) -> Any:
        return self.engine.lanes["spidra"]

    def job(self, i: int = 0) -> JobRecord:
        return self.engine.records[f"j{i}"]


def setup(plan: Plan | None = None, adapter: FakeAdapter | None = None, **kw: Any) -> Setup:
    notified: list[tuple[str, dict[str, Any]]] = []
    engine, output, rec = make_engine(
        plan or make_plan(1),
        adapter or FakeAdapter(),
        notify=lambda event, fields: notified.append((event, dict(fields))),
        wall=lambda: WALL,
        **kw,
    )
    clock = ManualClock()
    engine.lanes["spidra"].gate.clock = clock
    return Setup(engine, output, rec, clock, notified)


def with_settings(plan: Plan, **changes: Any) -> Plan:
    settings = dataclasses.replace(plan.providers["spidra"], **changes)
    return dataclasses.replace(plan, providers={"spidra": settings})


def running(spec: JobSpec, **kw: Any) -> JobRecord:
    return JobRecord(spec, state=State.RUNNING, remote=RemoteRef(f"r-{spec.id}"), **kw)


def submitting(spec: JobSpec) -> JobRecord:
    return JobRecord(spec, state=State.SUBMITTING, attempts=1)


def heard_before(s: Setup) -> None:
    """The provider answered once in this process (so a failure starts an outage)."""
    s.lane.gate.outage.heard(s.clock.now(), 200)


def down(s: Setup) -> None:
    """An outage of the provider is known."""
    heard_before(s)
    s.lane.gate.outage.failed(s.clock.now(), "connection refused", probe=False)
    assert s.lane.gate.outage.down


# -- provider notices, word for word ---------------------------------------------------------


def test_an_outage_is_announced_with_its_start_reason_and_next_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a zone far from UTC: the times printed are UTC whatever the host's zone
    monkeypatch.setenv("TZ", "XYZ-5:30")
    time.tzset()
    try:
        s = setup()
        heard_before(s)
        s.engine._unanswered(s.lane, "connection refused", probe=False)
    finally:
        monkeypatch.undo()
        time.tzset()
    outage = s.lane.gate.outage
    assert outage.down
    assert outage.reason == "connection refused"
    wait = outage.next_probe_at - T0
    assert 0 < wait < 1
    message = f"spidra unreachable since 08:00:00Z (connection refused); next try in {wait:.3g}s"
    assert s.engine.notices == [message]
    assert s.notified == [
        (
            "provider.unreachable",
            {
                "message": message,
                "provider": "spidra",
                "since": "2027-01-15T08:00:00Z",
                "reason": "connection refused",
                "next_try_seconds": round(wait, 3),
            },
        )
    ]
    assert s.lane.announced
    assert s.lane.timer_at == outage.next_probe_at or s.lane.timer is None


def test_the_end_of_an_announced_outage_is_announced_once() -> None:
    s = setup()
    s.lane.announced = True
    s.engine._reachable(s.lane, 12.34567)
    s.engine._reachable(s.lane, 1.0)  # not announced: not reported again
    assert not s.lane.announced
    message = "spidra reachable again after 12.3s"
    assert s.engine.notices == [message]
    assert s.notified == [
        ("provider.reachable", {"message": message, "provider": "spidra", "down_seconds": 12.346})
    ]


def test_a_provider_that_never_answered_is_given_up_with_what_to_fix() -> None:
    plan = make_plan(4)
    s = setup(plan)
    s.job(0).state = State.SUCCEEDED  # finished: not left for resume
    s.lane.gate.outage.failed(T0, "host not found", probe=False)
    s.engine._give_up(s.lane, "host not found")
    s.engine._give_up(s.lane, "again")  # once
    stopped = (
        "Spidra: no answer from 127.0.0.1:9 (host not found) in 1 tries; stopped all spidra "
        "jobs, 3 left for runner resume; check providers.spidra.base_url in m.yaml"
    )
    assert s.lane.unreachable == stopped
    assert s.lane.done is True
    assert s.engine.notices == [stopped]
    assert s.notified == [
        (
            "provider.stopped",
            {
                "message": stopped,
                "provider": "spidra",
                "reason": "unreachable",
                "host": "127.0.0.1:9",
            },
        )
    ]


def test_a_refused_key_fails_jobs_in_flight_skips_the_rest_and_blocks_waiting_sends() -> None:
    plan = with_settings(make_plan(3), api_key_var="MY_SPIDRA_KEY")
    s = setup(plan)
    polled = s.job(0)
    polled.state, polled.remote = State.RUNNING, RemoteRef("r-j0")
    s.lane.push_poll(polled, T0)
    s.lane.pending.clear()
    s.lane.pending.extend([s.job(1), s.job(2)])
    s.engine._stop(s.lane, call_error(ErrorKind.AUTH))  # no status code
    s.engine._stop(s.lane, call_error(ErrorKind.AUTH, status_code=401))  # once
    stopped = "Spidra: the API key in $MY_SPIDRA_KEY was refused (refused); stopped all spidra jobs"
    assert s.lane.stopped == stopped
    assert s.lane.gate.stopped == stopped
    assert (polled.state, polled.error) == (State.FAILED, stopped)
    assert [(s.job(i).state, s.job(i).error) for i in (1, 2)] == [(State.SKIPPED, stopped)] * 2
    message = f"{stopped}: 2 skipped, 1 in flight marked failed"
    assert s.engine.notices == [message]
    assert s.notified == [
        ("provider.stopped", {"message": message, "provider": "spidra", "reason": "auth"})
    ]


def test_a_refused_key_names_the_adapters_variable_when_the_manifest_names_none() -> None:
    s = setup(with_settings(make_plan(1), api_key_var=None))
    s.engine._stop(s.lane, call_error(ErrorKind.AUTH, status_code=403))
    assert s.lane.stopped == (
        "Spidra: the API key in $SPIDRA_API_KEY was refused (HTTP 403); stopped all spidra jobs"
    )


def test_out_of_credits_skips_unsent_jobs_once_and_says_why() -> None:
    s = setup(make_plan(2))
    s.engine._out_of_credits(s.lane, call_error(ErrorKind.CREDITS))
    s.engine._out_of_credits(s.lane, call_error(ErrorKind.CREDITS, status_code=402))  # once
    no_credits = "Spidra: out of credits (refused); stopped submitting spidra jobs"
    assert s.lane.no_credits == no_credits
    assert [(s.job(i).state, s.job(i).error) for i in (0, 1)] == [(State.SKIPPED, no_credits)] * 2
    message = f"{no_credits}: 2 not submitted, jobs already running continue"
    assert s.engine.notices == [message]
    assert s.notified == [
        ("provider.stopped", {"message": message, "provider": "spidra", "reason": "credits"})
    ]


@pytest.mark.parametrize(
    ("status", "code", "detail"),
    [(402, "NO_CREDITS", "HTTP 402 NO_CREDITS"), (402, None, "HTTP 402"), (None, "X", "X")],
)
def test_out_of_credits_names_the_status_and_code_it_got(
    status: int | None, code: str | None, detail: str
) -> None:
    s = setup()
    s.engine._out_of_credits(s.lane, call_error(ErrorKind.CREDITS, status_code=status, code=code))
    assert s.lane.no_credits == f"Spidra: out of credits ({detail}); stopped submitting spidra jobs"


# -- the pause clock -------------------------------------------------------------------------


def test_time_paused_moves_the_deadline_on_by_the_length_of_the_pause() -> None:
    s = setup(with_settings(make_plan(1), max_paused=50.0))
    job = running(s.job(0).spec)
    s.engine.start_timeout(s.lane, job, 30.0)
    assert s.engine._deadline(s.lane, job) == T0 + 30
    s.clock.t = T0 + 10
    s.engine.transition(job, Event.PAUSED)
    assert s.engine._deadline(s.lane, job) == T0 + 10 + 50  # while paused: max_paused
    s.clock.t = T0 + 25
    s.engine.transition(job, Event.RUNNING)
    assert s.engine._deadline(s.lane, job) == T0 + 30 + 15
    s.clock.t = T0 + 40
    s.engine.transition(job, Event.PAUSED)
    s.clock.t = T0 + 41
    s.engine.transition(job, Event.RUNNING)
    assert s.engine._deadline(s.lane, job) == T0 + 30 + 15 + 1


def test_a_pause_ended_before_any_timeout_was_set_sets_none() -> None:
    s = setup()
    job = running(s.job(0).spec)
    s.engine.transition(job, Event.PAUSED)
    s.engine.transition(job, Event.RUNNING)
    assert s.engine._deadline(s.lane, job) == float("inf")


# -- interrupt and cancel --------------------------------------------------------------------


async def test_an_interrupt_ends_every_lane_and_cuts_the_run_off_after_the_grace() -> None:
    s = setup()
    with anyio.CancelScope() as scope:
        s.engine._scope = scope
        before = anyio.current_time()
        s.engine.interrupt("SIGTERM", grace=3.0)
        s.engine.interrupt("SIGINT", grace=0.0)  # the first one counts
        after = anyio.current_time()
    assert s.engine.interrupted == "SIGTERM"
    assert s.lane.done is True
    assert before + 3.0 <= scope.deadline <= after + 3.0


def test_an_interrupt_before_the_run_started_only_stops_the_lanes() -> None:
    s = setup()
    s.engine.interrupt("SIGTERM")
    assert (s.engine.interrupted, s.lane.done) == ("SIGTERM", True)


async def test_runner_cancel_marks_the_engine_cancelled() -> None:
    s = setup()
    await s.engine.cancel_all()
    assert s.engine.interrupted == "cancelled"
    assert s.job(0).state is State.SKIPPED


# -- a failed submit -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "attr"), [(ErrorKind.AUTH, "stopped"), (ErrorKind.CREDITS, "no_credits")]
)
async def test_a_submit_refused_for_the_provider_skips_the_job_with_the_providers_reason(
    kind: ErrorKind, attr: str
) -> None:
    s = setup()
    job = submitting(s.job(0).spec)
    await s.engine._submit_failed(s.lane, job, call_error(kind, status_code=401), WALL)
    reason = getattr(s.lane, attr)
    assert reason is not None
    assert (job.state, job.error) == (State.SKIPPED, reason)


async def test_a_submit_refused_as_invalid_is_rejected_with_the_providers_words() -> None:
    s = setup()
    job = submitting(s.job(0).spec)
    exc = call_error(ErrorKind.INVALID, status_code=422)
    await s.engine._submit_failed(s.lane, job, exc, WALL)
    assert (job.state, job.error) == (State.FAILED, str(exc))


async def test_a_refused_submit_waits_its_backoff_before_it_is_sent_again() -> None:
    s = setup()
    job = submitting(s.job(0).spec)
    job.attempts = 2
    expected = retry_delay(s.engine.retry, 2, copy.deepcopy(s.engine.rng))
    exc = call_error(ErrorKind.TRANSIENT, status_code=502)  # spidra: provably not acted on
    await s.engine._submit_failed(s.lane, job, exc, WALL)
    assert job.state is State.PLANNED
    assert [(at, j) for at, _, j in s.lane.deferred] == [(T0 + expected, job)]
    assert expected > 0


async def test_a_submit_unanswered_while_the_provider_is_down_is_no_probe() -> None:
    s = setup()
    down(s)
    job = submitting(s.job(0).spec)
    exc = call_error(ErrorKind.TRANSIENT, not_accepted=True, network="connection refused")
    await s.engine._submit_failed(s.lane, job, exc, WALL)
    assert job.state is State.PLANNED
    assert s.lane.gate.outage.failures == 1  # only the probe's failure counts


class Reconciling(FakeAdapter):
    def __init__(self, answer: RemoteRef | Exception | None) -> None:
        super().__init__()
        self.answer = answer
        self.asked: list[tuple[str | None, float]] = []

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        self.asked.append((http.job_id, since))  # type: ignore[attr-defined]
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Errors(Recording):
    """Records the job's error at each transition (what the journal writes with it)."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[tuple[Event, str | None]] = []

    def transition(self, job: JobRecord, event: Event, previous: State) -> None:
        self.errors.append((event, job.error))


async def test_an_ambiguous_submit_found_remotely_keeps_its_send_time_and_the_why() -> None:
    adapter = Reconciling(RemoteRef("found"))
    s = setup(adapter=adapter)
    errors = Errors()
    s.engine.recorders.append(errors)
    job = submitting(s.job(0).spec)
    exc = call_error(ErrorKind.TRANSIENT, status_code=500)
    await s.engine._submit_failed(s.lane, job, exc, WALL - 7)
    assert adapter.asked == [("j0", WALL - 7)]  # through the job's own client
    assert (job.state, job.remote, job.submitted_at, job.error) == (
        State.QUEUED,
        RemoteRef("found"),
        WALL - 7,
        None,
    )
    why = f"the submit may or may not have been accepted; not re-sent: {exc}"
    assert errors.errors == [(Event.AMBIGUOUS, why), (Event.RECONCILED, None)]
    assert [j for _, _, j in s.lane.polls] == [job]


async def test_an_ambiguous_submit_proven_absent_waits_its_backoff() -> None:
    s = setup(adapter=Reconciling(NotSubmittedError("no such job")))
    job = submitting(s.job(0).spec)
    expected = retry_delay(s.engine.retry, 1, copy.deepcopy(s.engine.rng))
    await s.engine._submit_failed(s.lane, job, call_error(ErrorKind.TRANSIENT), WALL)
    assert job.state is State.PLANNED
    assert [(at, j) for at, _, j in s.lane.deferred] == [(T0 + expected, job)]


async def test_a_reconcile_that_fails_leaves_the_submit_unknown() -> None:
    s = setup(adapter=Reconciling(call_error(ErrorKind.TRANSIENT)))
    job = submitting(s.job(0).spec)
    state = await s.engine.reconcile(s.lane, job, WALL, "why")
    assert state is State.SUBMIT_UNKNOWN
    assert (job.remote, job.error) == (None, "why")
    assert s.lane.polls == []


# -- a failed poll ---------------------------------------------------------------------------


async def test_a_poll_refused_by_the_key_fails_with_the_providers_stop() -> None:
    s = setup()
    job = running(s.job(0).spec)
    s.engine._poll_failed(s.lane, job, call_error(ErrorKind.AUTH, status_code=401))
    assert s.lane.stopped is not None
    assert (job.state, job.error) == (State.FAILED, s.lane.stopped)


async def test_a_poll_refused_for_its_own_reason_fails_with_that_reason() -> None:
    s = setup()
    s.lane.stopped = "stopped already"
    job = running(s.job(0).spec)
    exc = call_error(ErrorKind.INVALID, status_code=400)
    s.engine._poll_failed(s.lane, job, exc)
    assert (job.state, job.error) == (State.FAILED, str(exc))


async def test_a_busy_poll_without_a_hint_backs_off_by_the_jobs_errors() -> None:
    s = setup()
    job = running(s.job(0).spec)
    s.engine.start_timeout(s.lane, job, 1e6)
    s.engine.retry = RetryPolicy(attempts=5, base=1.0, cap=100.0)  # 1 s, 2 s, 4 s, ...
    s.engine._poll_errors["j0"] = 3
    expected = retry_delay(s.engine.retry, 3, copy.deepcopy(s.engine.rng))
    s.engine._poll_failed(s.lane, job, call_error(ErrorKind.BUSY, status_code=503))
    assert [(at, j) for at, _, j in s.lane.polls] == [(T0 + expected, job)]
    assert job.next_poll_at == pytest.approx(WALL + expected, abs=1e-6)


async def test_a_busy_poll_of_a_job_without_errors_backs_off_its_first_step() -> None:
    s = setup()
    job = running(s.job(0).spec)
    s.engine.start_timeout(s.lane, job, 1e6)
    s.engine.retry = RetryPolicy(attempts=5, base=1.0, cap=100.0)
    expected = retry_delay(s.engine.retry, 1, copy.deepcopy(s.engine.rng))
    s.engine._poll_failed(s.lane, job, call_error(ErrorKind.BUSY, status_code=503))
    assert [(at, j) for at, _, j in s.lane.polls] == [(T0 + expected, job)]


async def test_a_busy_poll_with_a_hint_waits_the_hint() -> None:
    s = setup()
    job = running(s.job(0).spec)
    s.engine.start_timeout(s.lane, job, 1e6)
    s.engine._poll_failed(s.lane, job, call_error(ErrorKind.BUSY, retry_after=7.0))
    assert [(at, j) for at, _, j in s.lane.polls] == [(T0 + 7.0, job)]


async def test_poll_errors_while_the_provider_answers_others_fail_the_job_at_the_budget() -> None:
    s = setup()
    job = running(s.job(0).spec)
    s.engine.start_timeout(s.lane, job, 1e6)
    exc = call_error(ErrorKind.TRANSIENT, status_code=500)
    for _ in range(MAX_POLL_ERRORS - 1):
        heard_before(s)  # other jobs' requests are answered
        s.engine._poll_failed(s.lane, job, exc)
        assert job.state is State.RUNNING
    heard_before(s)
    s.engine._poll_failed(s.lane, job, exc)
    assert (job.state, job.error) == (State.FAILED, f"polling kept failing: {exc}")


async def test_poll_errors_during_a_known_outage_cost_the_job_nothing() -> None:
    s = setup()
    down(s)
    job = running(s.job(0).spec)
    s.engine.start_timeout(s.lane, job, 1e6)
    s.engine._poll_errors["j0"] = MAX_POLL_ERRORS - 1  # one more would end it, were it up
    for _ in range(MAX_POLL_ERRORS + 1):
        s.engine._poll_failed(s.lane, job, call_error(ErrorKind.TRANSIENT, status_code=500))
    assert job.state is State.RUNNING
    assert s.engine._poll_errors["j0"] == MAX_POLL_ERRORS - 1


async def test_only_the_probing_jobs_failure_counts_as_a_failed_probe() -> None:
    s = setup(make_plan(2))
    down(s)
    probe, other = running(s.job(0).spec), running(s.job(1).spec)
    s.lane.probe_job = probe
    exc = call_error(ErrorKind.TRANSIENT, not_accepted=True, network="connection refused")
    s.engine._poll_failed(s.lane, other, exc)
    assert s.lane.gate.outage.failures == 1
    s.engine._poll_failed(s.lane, probe, exc)
    assert s.lane.gate.outage.failures == 2


# -- timeouts --------------------------------------------------------------------------------


async def test_a_running_job_times_out_on_its_timeout_even_where_max_paused_is_set() -> None:
    s = setup(with_settings(make_plan(1), max_paused=60.0))
    job = running(s.job(0).spec)
    await s.engine._timed_out(s.lane, job)
    assert (job.state, job.error) == (
        State.TIMED_OUT,
        "timed out after 30s (left running remotely)",
    )


async def test_a_paused_job_without_a_reason_times_out_saying_so() -> None:
    s = setup(with_settings(make_plan(1), max_paused=60.0))
    job = running(s.job(0).spec)
    job.state = State.PAUSED
    await s.engine._timed_out(s.lane, job)
    assert job.error == (
        "timed out: paused for longer than max_paused 1m "
        "(pause reason: no reason given; left running remotely)"
    )


async def test_a_job_cut_off_mid_request_times_out_saying_so() -> None:
    s = setup()
    job = running(s.job(0).spec)
    await s.engine._timed_out(s.lane, job, unanswered=True)
    assert job.error == (
        "timed out after 30s with a request still unanswered (left running remotely)"
    )


def test_adapter_notes_go_to_every_recorder() -> None:
    s = setup()
    s.engine.noted(s.job(0), "squid")
    assert s.rec.notes == [("j0", "squid")]


def test_provider_call_errors_here_are_the_engines_kind() -> None:
    assert isinstance(call_error(ErrorKind.AUTH), ProviderCallError)


# -- delays: hint, slot, backoff -------------------------------------------------------------


@pytest.mark.parametrize("attempts", [1, 2])
async def test_a_backoff_decision_ignores_a_retry_hint_and_grows_with_the_attempts(
    attempts: int,
) -> None:
    s = setup()
    job = submitting(s.job(0).spec)
    job.attempts = attempts
    expected = retry_delay(s.engine.retry, attempts, copy.deepcopy(s.engine.rng))
    exc = call_error(ErrorKind.TRANSIENT, status_code=502, retry_after=99.0)
    await s.engine._submit_failed(s.lane, job, exc, WALL)
    assert [(at, j) for at, _, j in s.lane.deferred] == [(T0 + expected, job)]


@pytest.mark.parametrize(("in_flight", "cap", "at_once"), [(3, 2, True), (1, 1, False)])
async def test_a_pending_cap_learns_the_cap_and_waits_for_a_slot(
    in_flight: int, cap: int, at_once: bool
) -> None:
    s = setup()
    job = submitting(s.job(0).spec)
    s.lane.gate.jobs_in_flight = in_flight  # this submit included
    backoff = retry_delay(s.engine.retry, 1, copy.deepcopy(s.engine.rng))
    exc = call_error(ErrorKind.OTHER, status_code=429, code="TOO_MANY_PENDING_JOBS")
    await s.engine._submit_failed(s.lane, job, exc, WALL)
    assert s.lane.gate.in_flight_cap == cap
    # first in line for the slot another job frees; with none in flight, the backoff
    assert [at for at, _, _ in s.lane.deferred] == [T0 if at_once else T0 + backoff]


# -- status.json -----------------------------------------------------------------------------


def test_status_json_hides_every_remote_id_of_four_characters_or_more_longest_first() -> None:
    from runner.engine.engine import REMOTE_ID, status_document
    from tests.test_engine import status

    spec = make_plan(1).jobs[0]
    job = running(spec)
    job.remote = RemoteRef("a-zz-1-b", extra={"sub": "zz-1", "short": "abc", "n": 12345})
    payload = {"id": "a-zz-1-b", "zz-1": ["in zz-1", "abc", 12345], "tag": "abcd"}
    assert status_document(status("completed", payload=payload), job) == {
        "id": REMOTE_ID,
        REMOTE_ID: [f"in {REMOTE_ID}", "abc", 12345],
        "tag": "abcd",
    }
    job.remote = None
    assert status_document(status("completed", payload=payload), job) == payload


# -- a failed fetch --------------------------------------------------------------------------


class Fetching(FakeAdapter):
    def __init__(self, answer: Exception | Any) -> None:
        super().__init__()
        self.answer = answer

    async def fetch(self, http: Any, job: JobSpec, ref: RemoteRef, st: Any, sink: Any) -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def fetching(s: Setup) -> JobRecord:
    job = s.job(0)
    job.state, job.remote = State.FETCHING, RemoteRef("r-j0")
    s.engine.start_timeout(s.lane, job, 1e6)
    return job


async def test_a_fetch_refused_fails_the_job_saying_the_fetch_failed() -> None:
    from tests.test_engine import done

    exc = call_error(ErrorKind.INVALID, status_code=400)
    s = setup(adapter=Fetching(exc))
    job = fetching(s)
    await s.engine._fetch(s.lane, job, done())
    assert (job.state, job.error) == (State.FAILED, f"fetching the result failed: {exc}")


async def test_an_unreadable_result_fails_the_job_with_what_was_wrong() -> None:
    from runner.errors import ProviderResponseError
    from tests.test_engine import done

    s = setup(adapter=Fetching(ProviderResponseError("no items", "{}")))
    job = fetching(s)
    await s.engine._fetch(s.lane, job, done())
    assert (job.state, job.error) == (State.FAILED, "no items: {}")
    assert s.output.jobs["j0"].outcome == (State.FAILED, None)


async def test_a_busy_fetch_is_fetched_again_after_the_jobs_backoff() -> None:
    from tests.test_engine import done

    s = setup(adapter=Fetching(call_error(ErrorKind.BUSY, status_code=503)))
    job = fetching(s)
    s.engine.retry = RetryPolicy(attempts=5, base=1.0, cap=100.0)
    s.engine._poll_errors["j0"] = 2  # this failure is the third
    expected = retry_delay(s.engine.retry, 3, copy.deepcopy(s.engine.rng))
    await s.engine._fetch(s.lane, job, done())
    assert job.state is State.FETCHING
    assert s.output.jobs["j0"].resets == 1
    assert [(at, j) for at, _, j in s.lane.polls] == [(T0 + expected, job)]


@pytest.mark.parametrize(("before", "reported"), [(False, True), (True, False), (False, False)])
async def test_a_fetched_job_is_partial_when_its_status_or_its_fetch_said_so(
    before: bool, reported: bool
) -> None:
    from runner.remote import FetchReport
    from tests.test_engine import done

    report = FetchReport(items=3, partial=reported)
    s = setup(adapter=Fetching(report))
    job = fetching(s)
    job.partial = before
    await s.engine._fetch(s.lane, job, done())
    assert (job.state, job.partial) == (State.SUCCEEDED, before or reported)
    assert s.output.jobs["j0"].outcome == (State.SUCCEEDED, report)


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"status_code": 500}, "HTTP 500"),
        ({}, "no answer"),
        ({"network": "timed out"}, "timed out"),
    ],
)
async def test_an_outage_is_named_by_what_the_failure_showed(
    kw: dict[str, Any], reason: str
) -> None:
    s = setup()
    heard_before(s)
    job = running(s.job(0).spec)
    s.engine.start_timeout(s.lane, job, 1e6)
    s.engine._poll_failed(s.lane, job, call_error(ErrorKind.TRANSIENT, **kw))
    assert s.lane.gate.outage.reason == reason
    assert s.engine.notices[0].startswith(f"spidra unreachable since 08:00:00Z ({reason});")


def test_an_unknown_status_is_noticed_once_whatever_its_case_and_spaces() -> None:
    from runner.remote import RemoteState
    from tests.test_engine import status

    s = setup()
    s.engine._note_unknown(s.lane, status("Weird ", RemoteState.UNKNOWN))
    s.engine._note_unknown(s.lane, status("weird", RemoteState.UNKNOWN))
    s.engine._note_unknown(s.lane, status("active"))  # known: nothing to say
    message = "spidra: unknown status 'Weird ', treated as still running"
    assert s.engine.notices == [message]
    assert s.notified == [
        (
            "provider.unknown_status",
            {"message": message, "provider": "spidra", "status": "Weird "},
        )
    ]


# -- one poll --------------------------------------------------------------------------------


class Answering(FakeAdapter):
    """Polls answer `answers` in turn, and only for the job's own remote job."""

    def __init__(self, *answers: Any) -> None:
        super().__init__()
        self.answers = list(answers)

    async def poll(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> Any:
        assert ref == RemoteRef(f"r-{job.id}")
        self.poll_log.append(job.id)
        return self.answers.pop(0)


def polled(s: Setup, state: State = State.RUNNING) -> JobRecord:
    job = s.job(0)
    job.state, job.remote = state, RemoteRef("r-j0")
    s.engine.start_timeout(s.lane, job, 30.0)
    return job


async def test_a_poll_that_reports_failure_ends_the_job_with_the_providers_status() -> None:
    from tests.test_engine import status

    s = setup(adapter=Answering(status("failed", reason="blocked", payload={"state": "failed"})))
    sealed: list[Any] = []

    class Sealed(Recording):
        def transition(self, job: JobRecord, event: Event, previous: State) -> None:
            sealed.append(s.output.jobs["j0"].outcome)  # the files before the journal

    s.engine.recorders.append(Sealed())
    job = polled(s)
    await s.engine._poll(s.lane, job)
    assert sealed == [(State.FAILED, None)]
    assert (job.state, job.raw_status, job.reason, job.polls) == (
        State.FAILED,
        "failed",
        "blocked",
        1,
    )
    assert s.output.jobs["j0"].status == {"state": "failed"}
    assert s.output.jobs["j0"].outcome == (State.FAILED, None)
    assert s.rec.events("j0") == [Event.FAILED]


async def test_a_poll_moves_the_job_on_with_the_statuss_fields() -> None:
    from tests.test_engine import status

    s = setup(adapter=Answering(status("active", progress=0.5, results_ready=False)))
    job = polled(s, State.QUEUED)
    await s.engine._poll(s.lane, job)
    assert (job.state, job.raw_status, job.progress, job.results_ready) == (
        State.RUNNING,
        "active",
        0.5,
        False,
    )


@pytest.mark.parametrize("raw", ["active", "weird"])
async def test_a_poll_that_changes_nothing_records_no_transition_but_keeps_the_fields(
    raw: str,
) -> None:
    from tests.test_engine import status

    s = setup(adapter=Answering(status(raw, progress=0.25)))
    job = polled(s)
    s.engine._poll_errors["j0"] = 3
    await s.engine._poll(s.lane, job)
    assert (job.state, job.raw_status, job.progress) == (State.RUNNING, raw, 0.25)
    assert s.rec.transitions == []
    assert "j0" not in s.engine._poll_errors  # an answer clears the job's errors
    assert [j for _, _, j in s.lane.polls] == [job]


async def test_a_poll_taken_just_before_the_key_was_refused_fails_with_the_stop() -> None:
    s = setup(adapter=Answering())
    job = polled(s)
    s.lane.stopped = "Spidra: the API key was refused"
    await s.engine._poll(s.lane, job)
    assert (job.state, job.error) == (State.FAILED, "Spidra: the API key was refused")


async def test_a_poll_due_exactly_at_the_deadline_is_the_timeout() -> None:
    s = setup(adapter=Answering())
    job = polled(s)
    s.clock.t = T0 + 30.0
    await s.engine._poll(s.lane, job)
    assert job.state is State.TIMED_OUT


def test_a_job_found_paused_starts_its_pause_clock_with_its_timeout() -> None:
    s = setup(with_settings(make_plan(1), max_paused=50.0))
    job = running(s.job(0).spec)
    job.state = State.PAUSED
    s.engine.start_timeout(s.lane, job, 30.0)
    assert s.engine._deadline(s.lane, job) == T0 + 50.0


# -- one submit ------------------------------------------------------------------------------


class Submitting(FakeAdapter):
    """Submits answer `answer` (a Submitted, or an exception raised)."""

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer
        self.asked: list[float] = []

    async def submit(self, http: ProviderHttp, job: JobSpec) -> Any:
        self.submits.append(job.id)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        self.asked.append(since)
        return None


@pytest.mark.parametrize(
    "exc",
    [
        __import__("runner.errors", fromlist=["x"]).ProviderResponseError("unreadable", "<html>"),
        __import__("runner.errors", fromlist=["x"]).JobFailedError("unsupported type"),
    ],
    ids=["unreadable-2xx", "refused-before-sending"],
)
async def test_a_submit_that_cannot_go_on_fails_the_job_with_why(exc: Exception) -> None:
    s = setup(adapter=Submitting(exc))
    job = s.job(0)
    await s.engine._submit(s.lane, job)
    assert (job.state, job.error) == (State.FAILED, str(exc))
    assert s.output.jobs["j0"].outcome == (State.FAILED, None)


async def test_an_ambiguous_submit_is_looked_up_from_the_time_it_was_sent() -> None:
    adapter = Submitting(call_error(ErrorKind.TRANSIENT, status_code=500))
    s = setup(adapter=adapter)
    await s.engine._submit(s.lane, s.job(0))
    assert adapter.asked == [WALL]
    assert s.job(0).state is State.SUBMIT_UNKNOWN


async def test_a_submit_answered_with_an_unknown_status_is_queued_with_its_fields() -> None:
    from runner.providers.base import Submitted
    from runner.remote import RemoteState
    from tests.test_engine import status

    answer = Submitted(RemoteRef("r-j0"), status("odd", RemoteState.UNKNOWN, progress=0.1))
    s = setup(adapter=Submitting(answer))
    job = s.job(0)
    await s.engine._submit(s.lane, job)
    assert (job.state, job.raw_status, job.progress, job.submitted_at) == (
        State.QUEUED,
        "odd",
        0.1,
        WALL,
    )
    assert s.engine.notices == ["spidra: unknown status 'odd', treated as still running"]


# -- the job's timeout cuts a request off ----------------------------------------------------


class Hanging(FakeAdapter):
    """Every request hangs; a submit first sends its POST when `send` (then it may exist)."""

    def __init__(self, *, send: bool = False) -> None:
        super().__init__()
        self.send = send

    async def submit(self, http: ProviderHttp, job: JobSpec) -> Any:
        if self.send:
            await http.transport.request("POST", "http://127.0.0.1:9/api/scrape", headers={})  # type: ignore[attr-defined]
        await anyio.sleep_forever()

    async def poll(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> Any:
        await anyio.sleep_forever()

    async def fetch(self, *a: Any) -> Any:
        await anyio.sleep_forever()


CUT = 0.05  # seconds of real time the job's timeout allows a hanging request
BOUND = 10.0  # a request the timeout failed to cut fails the test instead of hanging it


async def test_a_submit_still_waiting_to_be_sent_at_its_timeout_is_planned_again() -> None:
    s = setup(make_plan(1, timeout=CUT), adapter=Hanging())
    job = s.job(0)
    with anyio.fail_after(BOUND):
        await s.engine._within_timeout(s.lane, job, "submit")
    assert (job.state, job.error) == (State.PLANNED, None)
    assert [(at, j) for at, _, j in s.lane.deferred] == [(T0, job)]
    assert s.rec.events("j0") == [Event.SUBMIT, Event.DEFERRED]


async def test_a_sent_submit_unanswered_at_its_timeout_is_never_sent_again() -> None:
    s = setup(make_plan(1, timeout=CUT), adapter=Hanging(send=True))
    job = s.job(0)
    with anyio.fail_after(BOUND):
        await s.engine._within_timeout(s.lane, job, "submit")
    assert job.state is State.SUBMIT_UNKNOWN
    assert job.error == (
        "the submit may or may not have been accepted; not re-sent: no complete reply to the "
        "submit within the job's timeout 0.05s"
    )
    assert s.lane.deferred == []


async def test_a_poll_unanswered_at_the_deadline_times_the_job_out() -> None:
    s = setup(adapter=Hanging())
    job = polled(s)
    s.engine.start_timeout(s.lane, job, CUT)  # the deadline, not the spec's 30 s, cuts it
    with anyio.fail_after(BOUND):
        await s.engine._within_timeout(s.lane, job, "poll")
    assert (job.state, job.error) == (
        State.TIMED_OUT,
        "timed out after 30s with a request still unanswered (left running remotely)",
    )


async def test_a_fetch_unanswered_at_the_deadline_times_the_job_out_saying_so() -> None:
    s = setup(adapter=Hanging())
    job = fetching(s)
    s.engine.start_timeout(s.lane, job, CUT)
    with anyio.fail_after(BOUND):
        await s.engine._within_timeout(s.lane, job, "poll")
    assert (job.state, job.error) == (
        State.TIMED_OUT,
        "timed out after 30s while fetching the result",
    )


async def test_a_request_cut_off_by_an_interrupt_leaves_the_job_as_it_was() -> None:
    s = setup(adapter=Hanging())
    job = polled(s)
    s.engine.start_timeout(s.lane, job, CUT)
    s.engine.interrupted = "SIGTERM"
    with anyio.fail_after(BOUND):
        await s.engine._within_timeout(s.lane, job, "poll")
    assert (job.state, job.error) == (State.RUNNING, None)


async def test_a_poll_already_past_its_deadline_is_timed_out_without_asking() -> None:
    s = setup(adapter=Hanging())
    job = polled(s)
    s.clock.t = T0 + 40
    with anyio.fail_after(BOUND):
        await s.engine._within_timeout(s.lane, job, "poll")
    assert (job.state, job.error) == (
        State.TIMED_OUT,
        "timed out after 30s (left running remotely)",
    )


# -- finish: files first, with what the journal will say -------------------------------------


async def test_a_finished_job_seals_its_files_with_its_final_record_and_hidden_ids() -> None:
    outcomes: list[tuple[State, str | None]] = []

    class Out(FakeOutput):
        def job_dir(self, job_id: str) -> Any:
            out = super().job_dir(job_id)
            out.write_outcome = lambda record, report=None: outcomes.append(  # type: ignore[method-assign]
                (record.state, record.error)
            )
            return out

    from tests.test_engine import status

    s = setup()
    s.engine.output = Out()
    job = polled(s)
    s.engine.finish(
        job, Event.FAILED, status=status("failed", payload={"id": "r-j0"}), error="boom"
    )
    assert outcomes == [(State.FAILED, "boom")]
    assert s.engine.output.job_dir("j0").status == {"id": "<remote id>"}
    assert (job.state, job.error) == (State.FAILED, "boom")


# -- the engine's own bookkeeping ------------------------------------------------------------


def test_resumed_jobs_in_flight_count_against_the_providers_cap() -> None:
    plan = make_plan(3)
    records = [
        running(plan.jobs[0]),
        running(plan.jobs[1]),
        JobRecord(plan.jobs[2], state=State.FETCHING, remote=RemoteRef("r-j2")),
    ]
    s = setup(plan, records=records)
    assert s.lane.gate.jobs_in_flight == 2  # fetching: the remote job is done


def test_every_recorder_is_told_the_state_a_job_left() -> None:
    s = setup()
    s.engine.transition(s.job(0), Event.SUBMIT)
    assert s.rec.transitions == [("j0", Event.SUBMIT, State.PLANNED, State.SUBMITTING)]


async def test_a_lane_ends_only_when_every_worker_is_done() -> None:
    """One worker finishing while another is still submitting must not end the lane: the
    other's job then needs its polls."""
    from runner.providers.base import Submitted
    from tests.test_engine import done, status

    class Slow(FakeAdapter):
        async def submit(self, http: ProviderHttp, job: JobSpec) -> Submitted:
            self.submits.append(job.id)
            if job.id == "j0":
                await anyio.sleep(0)  # lets the other worker take j1
                return Submitted(RemoteRef("r-j0"), done())  # finished at once
            for _ in range(20):
                await anyio.sleep(0)  # still under way when j0's worker looks for work
            return Submitted(RemoteRef("r-j1"), status("waiting"))

    engine, _, _ = make_engine(make_plan(2), Slow(polls=lambda j, n: done()), pool=2)
    with anyio.fail_after(BOUND):
        result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 2}


async def test_a_busy_fetch_during_an_outage_backs_off_without_spending_an_error() -> None:
    from tests.test_engine import done

    s = setup(adapter=Fetching(call_error(ErrorKind.BUSY, status_code=503)))
    down(s)
    job = fetching(s)
    s.engine.retry = RetryPolicy(attempts=5, base=1.0, cap=100.0)
    expected = retry_delay(s.engine.retry, 1, copy.deepcopy(s.engine.rng))
    await s.engine._fetch(s.lane, job, done())
    assert "j0" not in s.engine._poll_errors
    assert [(at, j) for at, _, j in s.lane.polls] == [(T0 + expected, job)]


@pytest.mark.parametrize("late", [0.0, 10.0])
async def test_a_poll_at_or_past_its_deadline_has_all_the_time_its_remote_cancel_needs(
    late: float,
) -> None:
    class SlowCancel(FakeAdapter):
        async def cancel(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> None:
            await anyio.sleep(0)  # a real request takes a while
            self.cancels.append(job.id)

    adapter = SlowCancel()
    s = setup(make_plan(1, on_timeout="cancel"), adapter=adapter)
    job = polled(s)
    s.clock.t = T0 + 30.0 + late
    with anyio.fail_after(BOUND):
        await s.engine._within_timeout(s.lane, job, "poll")
    assert adapter.cancels == ["j0"]
    assert (job.state, job.error) == (
        State.TIMED_OUT,
        "timed out after 30s (cancel requested remotely)",
    )
