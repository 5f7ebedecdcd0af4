"""Spend caps around a batch: does the plan fit its `budget:` (`runner plan`, `runner run`),
and what an earlier run of the batch already submitted and spent (resume, retry)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from runner.batch.reuse import REUSED_FROM
from runner.engine.budget import Spending, already_sent, cost_of
from runner.errors import UsageError
from runner.lifecycle import JobRecord
from runner.plan import Plan
from runner.providers.registry import PROVIDERS
from runner.store.results import OUTCOME, BatchDir


@dataclass(frozen=True, slots=True)
class Fit:
    """One cap against the plan: `scope` is a provider name or "batch"."""

    scope: str
    key: str  # where the cap is written in the manifest
    planned: int
    cap: int

    @property
    def fits(self) -> bool:
        return self.planned <= self.cap


def fits(plan: Plan) -> list[Fit]:
    """Every job cap of the plan against the jobs it would submit."""
    per_provider = Counter(spec.provider for spec in plan.jobs)
    found: list[Fit] = []
    for name, settings in sorted(plan.providers.items()):
        cap = settings.budget.jobs
        if cap is not None:
            key = f"providers.{name}.budget.jobs"
            found.append(Fit(name, key, per_provider.get(name, 0), cap))
    if plan.budget.jobs is not None:
        found.append(Fit("batch", "budget.jobs", len(plan.jobs), plan.budget.jobs))
    return found


def credit_caps(plan: Plan) -> list[tuple[str, float, str, str]]:
    """(provider, cap, unit, the field counted) of every credit cap."""
    caps = []
    for name, settings in sorted(plan.providers.items()):
        credits = settings.budget.credits
        info = PROVIDERS.get(name)
        if credits is not None and info is not None and info.cost_field is not None:
            caps.append((name, credits, info.cost_unit, info.cost_field))
    return caps


def describe(plan: Plan) -> list[str]:
    """`runner plan`'s lines: each cap with what the plan would use of it."""
    lines = []
    for fit in fits(plan):
        verdict = "fits" if fit.fits else f"DOES NOT FIT: {fit.planned - fit.cap} would be skipped"
        lines.append(f"  {fit.scope}: {fit.planned} jobs planned, cap {fit.cap} ({verdict})")
    for name, cap, unit, field in credit_caps(plan):
        lines.append(
            f"  {name}: cap {cap:g} {unit} (counted from each finished job's {field}; "
            "no estimate before jobs run)"
        )
    return lines


def budget_dict(plan: Plan) -> dict[str, Any]:
    """`runner plan --json`: every cap, what the plan would use of it, and whether it fits."""
    return {
        "jobs": [
            {
                "scope": fit.scope,
                "key": fit.key,
                "planned": fit.planned,
                "cap": fit.cap,
                "fits": fit.fits,
            }
            for fit in fits(plan)
        ],
        "credits": [
            {"provider": name, "cap": cap, "unit": unit, "counted_from": field}
            for name, cap, unit, field in credit_caps(plan)
        ],
    }


def require_fit(plan: Plan, *, allow_partial: bool) -> None:
    """UsageError (exit 2, nothing sent) when a job cap cannot hold the plan."""
    over = [fit for fit in fits(plan) if not fit.fits]
    if not over or allow_partial:
        return
    fit = over[0]
    whose = "the batch" if fit.scope == "batch" else fit.scope
    raise UsageError(
        f"{plan.source}: {fit.key}: {whose} has {fit.planned} jobs planned but a cap of "
        f"{fit.cap}; raise the cap, run fewer jobs (--only, --tag), or pass --allow-partial "
        f"to submit {fit.cap} and skip the rest"
    )


def _outcome(batch: BatchDir, job_id: str) -> dict[str, Any]:
    try:
        data = json.loads((batch.job_dir(job_id).path / OUTCOME).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def spending_for(plan: Plan, batch: BatchDir, records: Iterable[JobRecord]) -> Spending:
    """The batch's Spending: what its earlier runs submitted (journal) and the cost its
    finished jobs reported (their job.json). A job reused from an earlier batch was never
    submitted here and cost nothing here: it counts against no cap."""
    records = list(records)
    fields = {name: info.cost_field for name, info in PROVIDERS.items()}
    spent: dict[str, float] = {}
    if any(s.budget.credits is not None for s in plan.providers.values()):
        for record in records:
            if record.state.terminal:
                outcome = _outcome(batch, record.spec.id)
                if REUSED_FROM in outcome:  # paid for by the batch it came from
                    continue
                cost = cost_of(outcome, fields.get(record.spec.provider))
                if cost:
                    spent[record.spec.provider] = spent.get(record.spec.provider, 0.0) + cost
    return Spending(
        plan,
        cost_fields=fields,
        units={name: info.cost_unit for name, info in PROVIDERS.items()},
        sent=already_sent(records),
        spent=spent,
    )
