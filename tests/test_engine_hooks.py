"""The engine's two guard hooks against a scripted adapter (no HTTP): a Judge that fails a
job that finished remotely, and a Spending whose caps stop submits (runner.engine.budget)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from runner.engine.budget import Spending
from runner.lifecycle import Event, JobRecord, State
from runner.plan import Budget, JobSpec, Limits, Plan
from runner.providers.base import ProviderHttp
from runner.remote import FetchReport, RemoteRef, ResultSink, Status
from tests.test_engine import FakeAdapter, make_engine, make_plan

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class CostlyAdapter(FakeAdapter):
    """Every fetch reports 3 credits spent (Spidra's `credits_used`)."""

    async def fetch(
        self, http: ProviderHttp, job: JobSpec, ref: RemoteRef, st: Status, sink: ResultSink
    ) -> FetchReport:
        sink.write_result({"job": job.id})
        return FetchReport(items=1, outcome={"credits_used": 3})


def capped(plan: Plan, *, batch: Budget | None = None, spidra: Budget | None = None) -> Plan:
    providers = {
        name: dataclasses.replace(s, budget=spidra or Budget())
        for name, s in plan.providers.items()
    }
    return dataclasses.replace(plan, providers=providers, budget=batch or Budget())


def spending(plan: Plan) -> Spending:
    return Spending(plan, cost_fields={"spidra": "credits_used"})


async def test_a_judged_job_fails_with_the_verdict_after_finishing_remotely() -> None:
    seen: list[tuple[str, int]] = []

    def judge(job: JobRecord, report: FetchReport) -> str | None:
        seen.append((job.spec.id, report.items))
        return "completed with 1 result; expected at least 2" if job.spec.id == "j1" else None

    engine, output, rec = make_engine(make_plan(2), FakeAdapter(), judge=judge)
    result = await engine.run()

    assert result.counts == {State.SUCCEEDED: 1, State.FAILED: 1}
    assert sorted(seen) == [("j0", 1), ("j1", 1)]
    assert rec.events("j1")[-2:] == [Event.FINISHED, Event.ERROR]
    assert engine.records["j1"].error == "completed with 1 result; expected at least 2"
    outcome = output.jobs["j1"].outcome
    assert outcome is not None
    assert outcome[0] is State.FAILED
    assert outcome[1] == FetchReport(items=1)  # the report (and so the files) kept


async def test_a_job_cap_submits_that_many_and_skips_the_rest_without_a_request() -> None:
    plan = capped(make_plan(5), spidra=Budget(jobs=2))
    adapter = FakeAdapter()
    notices: list[tuple[str, dict[str, Any]]] = []
    engine, _, rec = make_engine(
        plan,
        adapter,
        pool=1,
        budget=spending(plan),
        notify=lambda e, f: notices.append((e, dict(f))),
    )
    result = await engine.run()

    assert adapter.submits == ["j0", "j1"]
    assert result.counts == {State.SUCCEEDED: 2, State.SKIPPED: 3}
    assert rec.events("j2") == [Event.SKIP]
    reason = (
        "budget: spidra reached its cap of 2 submitted jobs "
        "(providers.spidra.budget.jobs); not submitted"
    )
    assert {engine.records[f"j{i}"].error for i in (2, 3, 4)} == {reason}
    assert [(e, f["message"]) for e, f in notices] == [
        (
            "budget.reached",
            "budget: spidra reached its cap of 2 submitted jobs "
            "(providers.spidra.budget.jobs): 3 not submitted, jobs already running continue",
        )
    ]


async def test_the_batch_cap_counts_what_an_earlier_run_sent() -> None:
    plan = capped(make_plan(3), batch=Budget(jobs=3))
    budget = Spending(plan, cost_fields={}, sent={"spidra": 2})
    adapter = FakeAdapter()
    engine, _, _ = make_engine(plan, adapter, pool=1, budget=budget)
    result = await engine.run()

    assert adapter.submits == ["j0"]
    assert result.counts == {State.SUCCEEDED: 1, State.SKIPPED: 2}


async def test_a_credit_cap_stops_submits_once_finished_jobs_report_reaching_it() -> None:
    plan = capped(make_plan(5, limits=Limits(in_flight=1)), spidra=Budget(credits=5))
    adapter = CostlyAdapter()
    budget = spending(plan)
    engine, _, _ = make_engine(plan, adapter, pool=1, budget=budget)
    result = await engine.run()

    assert adapter.submits == ["j0", "j1"]  # 3 credits, then 6: past 5
    assert budget.spent == {"spidra": 6.0}
    assert result.counts == {State.SUCCEEDED: 2, State.SKIPPED: 3}


async def test_no_cap_means_no_bookkeeping() -> None:
    plan = make_plan(2)
    engine, _, _ = make_engine(plan, FakeAdapter(), budget=spending(plan))
    assert engine.budget is None
    assert (await engine.run()).counts == {State.SUCCEEDED: 2}
