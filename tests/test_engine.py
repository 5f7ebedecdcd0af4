"""The engine against a scripted adapter (no HTTP): lifecycle, scheduling, stops, limits."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runner.engine.engine import Engine
from runner.errors import ErrorKind, ProviderCallError, TransportError
from runner.http.backoff import RetryPolicy
from runner.http.client import ProviderClient
from runner.http.limits import SAFETY, Gate, OutagePolicy
from runner.lifecycle import Event, JobRecord, State
from runner.plan import JobSpec, Limits, Plan, PollPolicy, ProviderSettings, Rate, Secret
from runner.providers.base import ApiError, ProviderHttp, Reply, Submitted
from runner.providers.spidra import INFO
from runner.remote import FetchReport, RemoteRef, RemoteState, ResultSink, Status

pytestmark = pytest.mark.anyio

FAST = PollPolicy(0.001, 0.004, 2.0)
TINY_RETRY = RetryPolicy(attempts=2, base=0.001, cap=0.002)
TINY_OUTAGE = OutagePolicy(base=0.004, cap=0.02)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- fakes -----------------------------------------------------------------------------------


@dataclass
class FakeJobOutput:
    status: Any = None
    result: Any = None
    outcome: tuple[State, FetchReport | None] | None = None
    resets: int = 0

    def write_result(self, obj: Any) -> None:
        self.result = obj

    def append_item(self, obj: Any) -> None:
        raise AssertionError("not used")

    def file_path(self, name: str) -> Path:
        raise AssertionError("not used")

    def write_file(self, name: str, data: bytes) -> Path:
        raise AssertionError("not used")

    def write_status(self, payload: Any) -> None:
        self.status = payload

    def write_outcome(self, record: JobRecord, report: FetchReport | None = None) -> None:
        self.outcome = (record.state, report)

    def reset(self) -> None:
        self.resets += 1
        self.result = None


@dataclass
class FakeOutput:
    jobs: dict[str, FakeJobOutput] = field(default_factory=dict)

    def job_dir(self, job_id: str) -> FakeJobOutput:
        return self.jobs.setdefault(job_id, FakeJobOutput())


@dataclass
class Recording:
    transitions: list[tuple[str, Event, State, State]] = field(default_factory=list)
    polls: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)

    def transition(self, job: JobRecord, event: Event, previous: State) -> None:
        self.transitions.append((job.spec.id, event, previous, job.state))

    def noted(self, job: JobRecord, key: str) -> None:
        self.notes.append((job.spec.id, key))

    def polled(self, job: JobRecord, status: Status) -> None:
        self.polls.append((job.spec.id, status.raw))

    def events(self, job_id: str) -> list[Event]:
        return [e for j, e, _, _ in self.transitions if j == job_id]


def call_error(kind: ErrorKind, *, not_accepted: bool = False, **kw: Any) -> ProviderCallError:
    return ProviderCallError(
        f"spidra: POST /scrape: {kind.value}",
        provider="spidra",
        job_id=None,
        kind=kind,
        not_accepted=not_accepted,
        **kw,
    )


Script = Callable[[str, int], Status | Exception]  # (job id, poll number) → answer


class FakeAdapter:
    info = INFO

    def __init__(
        self,
        polls: Script | None = None,
        submit: Callable[[str, int], Submitted | Exception] | None = None,
    ) -> None:
        self._polls = polls or (lambda job, n: done() if n >= 2 else status("active"))
        self._submit = submit
        self.submits: list[str] = []
        self.poll_log: list[str] = []
        self.cancels: list[str] = []
        self.live = 0
        self.peak_live = 0
        self.tasks_seen = 0
        self.gate: Gate | None = None  # told of every HTTP answer, as ProviderClient does

    def _heard(self, answer: object) -> None:
        """What ProviderClient.send tells the gate: an HTTP answer came (none for a
        transport failure: refused, reset)."""
        if self.gate is None:
            return
        if not isinstance(answer, ProviderCallError):
            self.gate.heard(200)
        elif answer.network is None and not answer.not_accepted:
            self.gate.heard(answer.status_code or 500)

    def auth_headers(self, api_key: str) -> dict[str, str]:
        return {}

    def classify_error(self, reply: Reply) -> ApiError:
        return ApiError(ErrorKind.OTHER, "x")

    async def submit(self, http: ProviderHttp, job: JobSpec) -> Submitted:
        self.submits.append(job.id)
        self.tasks_seen = max(self.tasks_seen, len(asyncio.all_tasks()))
        answer = (
            self._submit(job.id, self.submits.count(job.id))
            if self._submit
            else Submitted(RemoteRef(f"r-{job.id}"), status("waiting"))
        )
        self._heard(answer)
        if isinstance(answer, Exception):
            raise answer
        self.live += 1
        self.peak_live = max(self.peak_live, self.live)
        return answer

    async def poll(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> Status:
        self.poll_log.append(job.id)
        await asyncio.sleep(0)
        answer = self._polls(job.id, self.poll_log.count(job.id))
        self._heard(answer)
        if isinstance(answer, Exception):
            raise answer
        if answer.state.terminal:
            self.live -= 1
        return answer

    async def fetch(
        self, http: ProviderHttp, job: JobSpec, ref: RemoteRef, st: Status, sink: ResultSink
    ) -> FetchReport:
        sink.write_result({"job": job.id})
        return FetchReport(items=1)

    async def cancel(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> None:
        self.cancels.append(job.id)

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        return None


def status(raw: str, state: RemoteState | None = None, **kw: Any) -> Status:
    states = {
        "waiting": RemoteState.QUEUED,
        "active": RemoteState.RUNNING,
        "completed": RemoteState.SUCCEEDED,
        "failed": RemoteState.FAILED,
    }
    return Status(state or states.get(raw, RemoteState.UNKNOWN), raw=raw, **kw)


def done() -> Status:
    return status("completed", payload={"result": {"content": "x"}})


def make_plan(
    n: int, *, limits: Limits | None = None, timeout: float = 30.0, on_timeout: str = "detach"
) -> Plan:
    settings = ProviderSettings(
        name="spidra",
        base_url="http://127.0.0.1:9/api",
        api_key=Secret("k"),
        api_key_var="SPIDRA_API_KEY",
        limits=limits or Limits(),
        poll=FAST,
        timeout=timeout,
        on_timeout=on_timeout,  # type: ignore[arg-type]
    )
    jobs = tuple(
        JobSpec(f"j{i}", "spidra", "scrape", {}, timeout=timeout, poll=FAST, index=i)
        for i in range(n)
    )
    return Plan("t", Path("m.yaml"), b"", "0", {"spidra": settings}, jobs)


class ProbeTransport:
    """Answers the engine's bare probes (GET of the base URL); adapters here never send."""

    def __init__(self, answer: Callable[[int], Reply | Exception] | None = None) -> None:
        self._answer = answer or (lambda n: Reply(404, {}, b""))
        self.probes: list[str] = []

    async def request(self, method: str, url: str, **kw: Any) -> Reply:
        self.probes.append(f"{method} {url}")
        answer = self._answer(len(self.probes))
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def download(self, *a: Any, **kw: Any) -> tuple[Reply, int]:
        raise AssertionError("not used")

    async def aclose(self) -> None:
        pass


def make_engine(
    plan: Plan,
    adapter: FakeAdapter,
    *,
    pool: int = 2,
    transport: ProbeTransport | None = None,
    **kw: Any,
) -> tuple[Engine, FakeOutput, Recording]:
    settings = plan.providers["spidra"]
    gate = Gate("spidra", settings.limits, pool_size=pool, outage=TINY_OUTAGE)
    client = ProviderClient(
        provider="spidra",
        base_url=settings.base_url,
        api_key=settings.api_key,
        adapter=adapter,
        gate=gate,
        transport=transport or ProbeTransport(),
    )
    adapter.gate = gate
    output, recording = FakeOutput(), Recording()
    engine = Engine(
        plan,
        clients={"spidra": client},
        adapters={"spidra": adapter},
        output=output,
        recorders=[recording],
        rng=random.Random(1),
        retry=TINY_RETRY,
        **kw,
    )
    return engine, output, recording


# -- the happy path --------------------------------------------------------------------------


async def test_every_job_goes_submit_poll_fetch_in_the_lifecycle_order() -> None:
    adapter = FakeAdapter()
    engine, output, rec = make_engine(make_plan(5), adapter)
    result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 5}
    assert result.succeeded
    assert rec.events("j0") == [
        Event.SUBMIT,
        Event.QUEUED,
        Event.RUNNING,
        Event.FINISHED,
        Event.FETCHED,
    ]
    assert [r for j, r in rec.polls if j == "j0"] == ["active", "completed"]
    assert output.jobs["j0"].result == {"job": "j0"}
    assert output.jobs["j0"].status == {"result": {"content": "x"}}
    assert output.jobs["j0"].outcome is not None
    assert output.jobs["j0"].outcome[0] is State.SUCCEEDED
    assert sorted(adapter.submits) == [f"j{i}" for i in range(5)]  # each exactly once
    assert engine.records["j0"].remote == RemoteRef("r-j0")


async def test_submits_go_in_plan_order() -> None:
    adapter = FakeAdapter()
    engine, _, _ = make_engine(make_plan(6), adapter, pool=1)
    await engine.run()
    assert adapter.submits == [f"j{i}" for i in range(6)]


async def test_no_task_per_planned_job() -> None:
    adapter = FakeAdapter(polls=lambda j, n: done())
    engine, _, _ = make_engine(make_plan(2000), adapter, pool=4)
    result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 2000}
    # the test's own task + 4 workers; nothing per job
    assert adapter.tasks_seen <= 6


async def test_remote_jobs_in_flight_never_exceed_the_cap() -> None:
    adapter = FakeAdapter(polls=lambda j, n: done() if n >= 3 else status("active"))
    engine, _, _ = make_engine(make_plan(30, limits=Limits(in_flight=3)), adapter, pool=8)
    result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 30}
    assert adapter.peak_live == 3


async def test_a_submit_reply_that_is_already_terminal_is_fetched_without_polling() -> None:
    adapter = FakeAdapter(submit=lambda j, n: Submitted(RemoteRef("sync"), done()))
    engine, output, rec = make_engine(make_plan(1), adapter)
    assert (await engine.run()).counts == {State.SUCCEEDED: 1}
    assert adapter.poll_log == []
    assert rec.events("j0") == [Event.SUBMIT, Event.FINISHED, Event.FETCHED]
    assert output.jobs["j0"].result == {"job": "j0"}


# -- scheduling --------------------------------------------------------------------------------


async def test_the_most_overdue_poll_is_served_first() -> None:
    adapter = FakeAdapter(polls=lambda j, n: done())
    plan = make_plan(4)
    engine, _, _ = make_engine(plan, adapter, pool=1)
    lane = engine.lanes["spidra"]
    for i, overdue in enumerate([0.1, 0.4, 0.2, 0.3]):
        job = engine.records[f"j{i}"]
        job.state = State.RUNNING  # a resumed batch: these were in flight
        job.remote = RemoteRef(f"r{i}")
        engine.counts[State.PLANNED] -= 1
        engine.counts[State.RUNNING] += 1
        lane.pending.remove(job)
        engine.schedule(lane, job, -overdue)
    await engine.run()
    assert adapter.poll_log == ["j1", "j3", "j2", "j0"]


async def test_poll_intervals_stretch_to_fit_the_status_budget() -> None:
    limits = Limits(endpoints={"status": Rate(10, 1.0)})
    engine, _, _ = make_engine(make_plan(1, limits=limits), FakeAdapter())
    lane = engine.lanes["spidra"]
    job = engine.records["j0"]
    lane.gate.jobs_in_flight = 50
    before = lane.gate.clock.now()
    engine._next_poll(lane, job)
    due = lane.polls[0][0]
    # 50 jobs sharing 10 x SAFETY req/s: each polls at most every 50 / 9.5 s
    assert due - before >= 50 / (10 * SAFETY) - 1e-6


async def test_an_unknown_status_is_non_terminal_and_noticed_once() -> None:
    script: Script = lambda j, n: done() if n >= 3 else status("thinking")  # noqa: E731
    engine, _, _ = make_engine(make_plan(3), FakeAdapter(polls=script))
    result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 3}
    assert result.notices == ("spidra: unknown status 'thinking', treated as still running",)


# -- timeouts ----------------------------------------------------------------------------------


async def test_a_job_past_its_timeout_is_timed_out_and_left_running() -> None:
    adapter = FakeAdapter(polls=lambda j, n: status("active"))
    engine, output, _ = make_engine(make_plan(2, timeout=0.03), adapter)
    assert (await engine.run()).counts == {State.TIMED_OUT: 2}
    assert adapter.cancels == []
    assert engine.records["j0"].error == "timed out after 0.03s (left running remotely)"
    assert output.jobs["j0"].outcome is not None


async def test_on_timeout_cancel_cancels_the_remote_job() -> None:
    adapter = FakeAdapter(polls=lambda j, n: status("waiting"))
    engine, _, _ = make_engine(make_plan(2, timeout=0.03, on_timeout="cancel"), adapter)
    assert (await engine.run()).counts == {State.TIMED_OUT: 2}
    assert sorted(adapter.cancels) == ["j0", "j1"]
    assert engine.records["j1"].error == "timed out after 0.03s (cancel requested remotely)"


# -- failures ----------------------------------------------------------------------------------


async def test_a_refused_key_stops_the_provider_with_one_message() -> None:
    adapter = FakeAdapter(submit=lambda j, n: call_error(ErrorKind.AUTH, status_code=401))
    engine, output, _ = make_engine(make_plan(6), adapter, pool=1)
    result = await engine.run()
    assert adapter.submits == ["j0"]  # no hammering
    assert result.counts == {State.SKIPPED: 6}
    assert result.notices == (
        "Spidra: the API key in $SPIDRA_API_KEY was refused (HTTP 401); stopped all spidra "
        "jobs: 6 skipped, 0 in flight marked failed",
    )
    assert engine.records["j3"].error == (
        "Spidra: the API key in $SPIDRA_API_KEY was refused (HTTP 401); stopped all spidra jobs"
    )
    assert set(output.jobs) == {f"j{i}" for i in range(6)}  # every job has its job.json


async def test_a_refused_key_while_polling_fails_the_jobs_in_flight() -> None:
    def polls(job: str, n: int) -> Status | Exception:
        if job == "j0" and n >= 2:
            return call_error(ErrorKind.AUTH, status_code=401)
        return status("active")

    adapter = FakeAdapter(polls=polls)
    engine, _, _ = make_engine(make_plan(3), adapter, pool=1)
    result = await engine.run()
    assert result.counts == {State.FAILED: 3}
    assert len(result.notices) == 1
    assert result.notices[0].endswith("0 skipped, 2 in flight marked failed")


async def test_exhausted_credits_stop_submitting_but_running_jobs_finish() -> None:
    def submit(job: str, n: int) -> Submitted | Exception:
        if job == "j2":
            return call_error(ErrorKind.CREDITS, status_code=402, code="PAYMENT_OVERDUE")
        return Submitted(RemoteRef(f"r-{job}"), status("waiting"))

    adapter = FakeAdapter(submit=submit)
    engine, _, _ = make_engine(make_plan(5), adapter, pool=1)
    result = await engine.run()
    assert adapter.submits == ["j0", "j1", "j2"]
    assert result.counts == {State.SUCCEEDED: 2, State.SKIPPED: 3}
    assert result.notices == (
        "Spidra: out of credits (HTTP 402 PAYMENT_OVERDUE); stopped submitting spidra jobs: "
        "2 not submitted, jobs already running continue",
    )


async def test_a_submit_that_was_not_accepted_is_retried_first_and_counted() -> None:
    def submit(job: str, n: int) -> Submitted | Exception:
        if job == "j0" and n == 1:
            return call_error(ErrorKind.BUSY, not_accepted=True, retry_after=0.0)
        return Submitted(RemoteRef(f"r-{job}"), status("waiting"))

    adapter = FakeAdapter(submit=submit)
    engine, _, rec = make_engine(make_plan(3), adapter, pool=1)
    assert (await engine.run()).counts == {State.SUCCEEDED: 3}
    assert adapter.submits[:3] == ["j0", "j0", "j1"]  # keeps its place at the front
    assert rec.events("j0")[:3] == [Event.SUBMIT, Event.DEFERRED, Event.SUBMIT]
    assert engine.records["j0"].attempts == 2


async def test_too_many_pending_jobs_lowers_the_in_flight_cap() -> None:
    def submit(job: str, n: int) -> Submitted | Exception:
        if job == "j2" and n == 1:
            return call_error(
                ErrorKind.BUSY, not_accepted=True, code="TOO_MANY_PENDING_JOBS", status_code=429
            )
        return Submitted(RemoteRef(f"r-{job}"), status("waiting"))

    adapter = FakeAdapter(submit=submit)
    engine, _, _ = make_engine(make_plan(6), adapter, pool=1)
    assert (await engine.run()).counts == {State.SUCCEEDED: 6}
    assert engine.lanes["spidra"].gate.in_flight_cap == 2


async def test_a_submit_that_is_never_accepted_fails_after_bounded_attempts() -> None:
    adapter = FakeAdapter(submit=lambda j, n: call_error(ErrorKind.TRANSIENT, not_accepted=True))
    engine, _, _ = make_engine(make_plan(1), adapter)
    assert (await engine.run()).counts == {State.FAILED: 1}
    assert len(adapter.submits) == 12
    assert engine.records["j0"].error == (
        "not accepted after 12 attempts: spidra: POST /scrape: transient"
    )


async def test_an_ambiguous_submit_becomes_submit_unknown_and_is_not_resent() -> None:
    adapter = FakeAdapter(
        submit=lambda j, n: (
            call_error(ErrorKind.TRANSIENT)
            if j == "j1"
            else Submitted(RemoteRef(f"r-{j}"), status("waiting"))
        )
    )
    engine, _, _ = make_engine(make_plan(3), adapter)
    result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 2, State.SUBMIT_UNKNOWN: 1}
    assert adapter.submits.count("j1") == 1
    assert engine.records["j1"].error == (
        "the submit may or may not have been accepted; not re-sent: spidra: POST /scrape: transient"
    )


async def test_a_malformed_poll_fails_that_job_and_the_batch_goes_on() -> None:
    from runner.errors import ProviderResponseError

    def polls(job: str, n: int) -> Status | Exception:
        if job == "j1":
            return ProviderResponseError("spidra: the status reply has no status", '{"x": 1}')
        return done()

    engine, _, _ = make_engine(make_plan(3), FakeAdapter(polls=polls))
    result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 2, State.FAILED: 1}
    assert engine.records["j1"].error == 'spidra: the status reply has no status: {"x": 1}'


async def test_a_job_whose_polls_keep_failing_while_others_answer_fails() -> None:
    def polls(job: str, n: int) -> Status | Exception:
        if job == "j1":
            return call_error(ErrorKind.TRANSIENT, status_code=500)
        return done() if n >= 40 else status("active")  # the provider answers j0 meanwhile

    engine, _, _ = make_engine(make_plan(2), FakeAdapter(polls=polls))
    result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 1, State.FAILED: 1}
    assert engine.records["j1"].error == "polling kept failing: spidra: POST /scrape: transient"


async def test_polls_failing_while_nothing_else_answers_wait_until_the_job_times_out() -> None:
    # Indistinguishable from an outage: the provider's state, so the job waits (its
    # timeout still holds) and its remote job is never given up as failed.
    adapter = FakeAdapter(polls=lambda j, n: call_error(ErrorKind.TRANSIENT, status_code=502))
    engine, _, _ = make_engine(make_plan(1, timeout=0.1), adapter)
    result = await engine.run()
    assert result.counts == {State.TIMED_OUT: 1}
    assert engine.records["j0"].error == "timed out after 0.1s (left running remotely)"
    assert engine.records["j0"].remote == RemoteRef("r-j0")


async def test_a_provider_without_an_adapter_skips_its_jobs() -> None:
    plan = make_plan(1)
    extra = JobSpec("b0", "bulkgrid", "extract", {}, index=1)
    plan = Plan(plan.name, plan.source, b"", "0", plan.providers, (*plan.jobs, extra))
    engine, output, _ = make_engine(plan, FakeAdapter())
    result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 1, State.SKIPPED: 1}
    assert engine.records["b0"].error == "runner has no adapter for provider 'bulkgrid' yet"
    assert "b0" in output.jobs


async def test_a_result_gone_on_fetch_expires_the_job_with_a_clear_message() -> None:
    class GoneAdapter(FakeAdapter):
        async def fetch(
            self, http: ProviderHttp, job: JobSpec, ref: RemoteRef, st: Status, sink: ResultSink
        ) -> FetchReport:
            raise ProviderCallError(
                "pulse job j0: GET /large_results/1: HTTP 410: gone",
                provider="pulse",
                job_id=job.id,
                kind=ErrorKind.GONE,
                status_code=410,
            )

    engine, output, rec = make_engine(make_plan(1), GoneAdapter(polls=lambda j, n: done()))
    assert (await engine.run()).counts == {State.EXPIRED: 1}
    assert rec.events("j0")[-1] is Event.GONE
    assert engine.records["j0"].error == (
        "the result is gone (HTTP 410) and cannot be fetched again: "
        "pulse job j0: GET /large_results/1: HTTP 410: gone"
    )
    assert engine.records["j0"].results_ready is False
    assert output.jobs["j0"].status == {"result": {"content": "x"}}


class NotingAdapter(FakeAdapter):
    """Notes a submit step, as the Lobstr adapter does with the squid it created."""

    async def submit(self, http: ProviderHttp, job: JobSpec) -> Submitted:
        http.note("step", f"done-{job.id}")
        return await super().submit(http, job)

    async def poll(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> Status:
        assert http.notes == {"step": f"done-{job.id}"}  # the same job's notes come back
        return await super().poll(http, job, ref)


async def test_adapter_notes_reach_every_recorder_and_stay_with_the_job() -> None:
    adapter = NotingAdapter()
    engine, _, rec = make_engine(make_plan(2), adapter)
    result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 2}
    assert sorted(rec.notes) == [("j0", "step"), ("j1", "step")]
    assert engine.records["j1"].notes == {"step": "done-j1"}


class ReconcilingAdapter(FakeAdapter):
    """Every submit is ambiguous (sent, no answer); reconcile answers `found`."""

    def __init__(self, found: RemoteRef | Exception, **kw: Any) -> None:
        super().__init__(submit=lambda j, n: call_error(ErrorKind.TRANSIENT), **kw)
        self.found = found
        self.reconciled = 0

    async def reconcile(self, http: ProviderHttp, job: JobSpec, since: float) -> RemoteRef | None:
        self.reconciled += 1
        if isinstance(self.found, Exception):
            raise self.found
        return self.found


async def test_a_submit_proven_absent_every_time_is_not_resent_forever() -> None:
    from runner.errors import NotSubmittedError

    adapter = ReconcilingAdapter(NotSubmittedError("spidra: no such job"))
    engine, output, _ = make_engine(make_plan(1), adapter)
    assert (await engine.run()).counts == {State.SKIPPED: 1}
    assert len(adapter.submits) == 12
    assert adapter.reconciled == 12
    assert engine.records["j0"].error == (
        "not submitted: 12 attempts sent, none reached spidra: spidra: POST /scrape: transient"
    )
    assert output.jobs["j0"].outcome is not None
    assert output.jobs["j0"].outcome[0] is State.SKIPPED


async def test_a_reconciled_submit_is_not_finished_until_it_really_finishes() -> None:
    seen: list[tuple[State, float | None]] = []

    class FinishTimes(Recording):
        def transition(self, job: JobRecord, event: Event, previous: State) -> None:
            seen.append((job.state, job.finished_at))

    adapter = ReconcilingAdapter(RemoteRef("r-found"), polls=lambda j, n: done())
    engine, _, _ = make_engine(make_plan(1), adapter)
    engine.recorders.append(FinishTimes())
    assert (await engine.run()).counts == {State.SUCCEEDED: 1}
    states = [state for state, _ in seen]
    assert states == [
        State.SUBMITTING,
        State.SUBMIT_UNKNOWN,
        State.QUEUED,
        State.FETCHING,
        State.SUCCEEDED,
    ]
    unknown_at = seen[1][1]
    assert unknown_at is not None  # submit_unknown is terminal, for a moment
    assert [at for _, at in seen[2:4]] == [None, None]  # then it was found: running again
    finished_at = seen[4][1]
    assert finished_at is not None
    assert finished_at >= unknown_at
    assert engine.records["j0"].finished_at == finished_at


# -- outages: the provider's state, not its jobs' ----------------------------------------------


def unreachable(*, sent: bool = False) -> ProviderCallError:
    return ProviderCallError(
        "spidra: GET /scrape/x: could not connect",
        provider="spidra",
        job_id=None,
        kind=ErrorKind.TRANSIENT,
        not_accepted=not sent,
        network="connection reset" if sent else "connection refused",
    )


async def test_an_outage_holds_every_poll_behind_one_probe_and_costs_the_jobs_nothing() -> None:
    outage = {"on": False, "polls_while_down": 0}

    class CutAdapter(FakeAdapter):
        probes_out = peak_probes = 0  # polls sent once the outage was known

        async def poll(self, http: ProviderHttp, job: JobSpec, ref: RemoteRef) -> Status:
            if len(self.poll_log) == 6:
                outage["on"] = True  # the network goes, while every job is polling
            if outage["on"]:
                self.poll_log.append(job.id)
                outage["polls_while_down"] += 1
                if outage["polls_while_down"] >= 30:  # far past 5 errors for each job
                    outage["on"] = False
                known = self.gate is not None and self.gate.outage.down
                self.probes_out += known
                self.peak_probes = max(self.peak_probes, self.probes_out)
                await asyncio.sleep(0.001)
                self.probes_out -= known
                raise unreachable(sent=True)
            return await super().poll(http, job, ref)

    adapter = CutAdapter(polls=lambda j, n: done() if n >= 8 else status("active"))
    engine, _, _ = make_engine(make_plan(4), adapter, pool=4, wall=lambda: 1_800_000_000.0)
    result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 4}
    assert adapter.submits == ["j0", "j1", "j2", "j3"]  # nothing re-sent
    assert adapter.peak_probes == 1  # while down, one request at a time
    assert result.notices[0].startswith(
        "spidra unreachable since 08:00:00Z (connection reset); next try in "
    )
    assert result.notices[1].startswith("spidra reachable again after ")
    assert len(result.notices) == 2  # one line per change, not per failure


async def test_a_provider_that_never_answers_stops_in_a_few_tries_and_leaves_its_jobs() -> None:
    refused = TransportError("could not connect", sent=False, reason="connection refused")
    transport = ProbeTransport(lambda n: refused)
    adapter = FakeAdapter(submit=lambda j, n: unreachable())
    engine, output, _ = make_engine(make_plan(5), adapter, pool=2, transport=transport)
    result = await engine.run()
    assert result.counts == {State.PLANNED: 5}  # left for runner resume; not failed, not skipped
    assert not result.succeeded
    assert result.notices == (
        "Spidra: no answer from 127.0.0.1:9 (connection refused) in 3 tries; stopped all "
        "spidra jobs, 5 left for runner resume; check providers.spidra.base_url in m.yaml",
    )
    assert len(adapter.submits) <= 2  # the submits under way when it first failed, no more
    assert transport.probes == ["GET http://127.0.0.1:9/api"] * 2  # probes are never a POST
    assert output.jobs == {}  # nothing sealed: every job can still run


async def test_while_down_nothing_is_submitted_until_a_probe_gets_an_answer() -> None:
    answers: list[Reply | Exception] = [
        TransportError("could not connect", sent=False, reason="connection refused"),
        Reply(404, {}, b""),
    ]
    transport = ProbeTransport(lambda n: answers[min(n, len(answers)) - 1])
    adapter = FakeAdapter(
        submit=lambda j, n: (
            unreachable() if j == "j0" and n == 1 else Submitted(RemoteRef(f"r-{j}"))
        )
    )
    engine, _, rec = make_engine(make_plan(3), adapter, pool=1, transport=transport)
    adapter.gate.heard(200)  # type: ignore[union-attr]  # it answered earlier in this run
    result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 3}
    assert adapter.submits == ["j0", "j0", "j1", "j2"]  # held, then first in line
    assert len(transport.probes) == 2
    assert rec.events("j0")[:3] == [Event.SUBMIT, Event.DEFERRED, Event.SUBMIT]
    assert result.notices[0].startswith("spidra unreachable since ")
    assert result.notices[1].startswith("spidra reachable again after ")


async def test_a_fetch_cut_by_the_network_is_fetched_again_from_an_empty_directory() -> None:
    class FlakyFetch(FakeAdapter):
        fetches = 0

        async def fetch(
            self, http: ProviderHttp, job: JobSpec, ref: RemoteRef, st: Status, sink: ResultSink
        ) -> FetchReport:
            self.fetches += 1
            if self.fetches == 1:
                raise unreachable(sent=True)
            return await super().fetch(http, job, ref, st, sink)

    adapter = FlakyFetch(polls=lambda j, n: done())
    engine, output, rec = make_engine(make_plan(1), adapter)
    result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 1}
    assert adapter.fetches == 2
    assert output.jobs["j0"].resets == 1
    assert rec.events("j0")[-2:] == [Event.FINISHED, Event.FETCHED]
