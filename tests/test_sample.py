"""The canary's phases with the engine replaced by a stand-in (the real runs are in
tests/e2e/test_sample.py): which jobs each phase gets, and what an interrupt leaves."""

from __future__ import annotations

import io
from pathlib import Path

from runner.batch import sample
from runner.engine.engine import Engine, EngineResult
from runner.lifecycle import JobRecord, State
from runner.plan import JobSpec, Plan
from runner.store.journal import Journal
from runner.store.results import BatchDir


def make_plan(tmp: Path) -> Plan:
    jobs = tuple(
        JobSpec(id=f"j{i}", provider="pulse", type="extract", params={}, index=i) for i in range(4)
    )
    return Plan(
        name="unit",
        source=tmp / "m.yaml",
        manifest_bytes=b"",
        manifest_sha256="0" * 64,
        providers={},
        jobs=jobs,
    )


class Phases:
    """drive_once and control: records what each phase was given; sets the outcome."""

    def __init__(self, plan: Plan, tmp: Path, journal: Journal, outcome: State) -> None:
        self.plan, self.journal, self.outcome = plan, journal, outcome
        self.batch = BatchDir(tmp / "batch")
        self.given: list[list[str]] = []
        self.stopped = False
        self.interrupt_first = False

    def drive_once(self, records: list[JobRecord] | None) -> tuple[EngineResult, Engine]:
        assert records is not None
        self.given.append([r.spec.id for r in records if r.state is State.PLANNED])
        for record in records:
            if record.state is State.PLANNED and not self.interrupt_first:
                record.state = self.outcome
        if self.interrupt_first:
            self.stopped = True
        engine = self.control(records)
        return engine.result(), engine

    def control(self, records: list[JobRecord]) -> Engine:
        return Engine(
            self.plan,
            clients={},
            adapters={},
            output=self.batch,
            records=records,
            recorders=[self.journal],
        )


def setup(tmp_path: Path, outcome: State) -> tuple[Phases, list[JobRecord], list[str]]:
    plan = make_plan(tmp_path)
    journal = Journal.create(tmp_path / "journal.sqlite", plan, "b1")
    ids = sample.record(journal, plan, 1)
    phases = Phases(plan, tmp_path, journal, outcome)
    return phases, journal.load_records(plan), ids


def run(phases: Phases, records: list[JobRecord]) -> tuple[EngineResult, Engine]:
    return sample.run_phases(
        phases.drive_once,
        phases.control,
        phases.journal,
        records,
        stopped=lambda: phases.stopped,
        stderr=io.StringIO(),
        retry_hint="runner retry b1",
    )


def test_the_sample_runs_alone_then_the_rest(tmp_path: Path) -> None:
    phases, records, ids = setup(tmp_path, State.SUCCEEDED)
    assert len(ids) == 1

    result, _ = run(phases, records)

    assert phases.given[0] == ids
    assert sorted(phases.given[1]) == sorted({"j0", "j1", "j2", "j3"} - set(ids))
    assert result.succeeded


def test_a_failed_sample_skips_the_rest_and_records_them_as_held(tmp_path: Path) -> None:
    phases, records, ids = setup(tmp_path, State.FAILED)

    result, _ = run(phases, records)

    assert phases.given == [ids]  # the rest never reached a run
    rest = [r for r in records if r.spec.id not in ids]
    assert {r.state for r in rest} == {State.SKIPPED}
    assert {r.error for r in rest} == {f"canary failed: {ids[0]} failed"}
    assert result.counts == {State.FAILED: 1, State.SKIPPED: 3}
    assert sorted(sample._ids(phases.journal, sample.HELD)) == sorted(r.spec.id for r in rest)
    assert {row.state for row in phases.journal.rows() if row.job_id != ids[0]} == {State.SKIPPED}


def test_an_interrupt_during_the_sample_leaves_the_rest_planned_for_resume(
    tmp_path: Path,
) -> None:
    phases, records, ids = setup(tmp_path, State.FAILED)
    phases.interrupt_first = True

    run(phases, records)

    assert phases.given == [ids]
    assert {r.state for r in records} == {State.PLANNED}
    assert sample._ids(phases.journal, sample.HELD) == []


def test_a_batch_without_a_sample_is_one_run(tmp_path: Path) -> None:
    plan = make_plan(tmp_path)
    journal = Journal.create(tmp_path / "journal.sqlite", plan, "b1")
    phases = Phases(plan, tmp_path, journal, State.SUCCEEDED)

    run(phases, journal.load_records(plan))

    assert phases.given == [["j0", "j1", "j2", "j3"]]
