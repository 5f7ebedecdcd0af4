"""Spend caps (`budget:`): jobs submitted and credits reported, per provider and for the
batch, against their caps. Pure bookkeeping the engine consults before each submit.

The engine asks `refuse` before a submit, tells `count` when one goes out and `charge`
what a finished job reported; reaching a cap stops new submits while running jobs finish.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from runner.lifecycle import JobRecord
from runner.plan import Budget, Plan


@dataclass(frozen=True, slots=True)
class Refusal:
    """A cap reached: `provider` None means the batch's own cap (every provider stops)."""

    provider: str | None
    reason: str


def _fmt(value: float) -> str:
    return f"{value:g}"


def cost_of(outcome: Mapping[str, object], field: str | None) -> float:
    """The cost a finished job reported under `field` (0 when it reported none)."""
    if field is None:
        return 0.0
    value = outcome.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0.0
    try:
        number = float(value)  # Spidra's crawl details send a decimal string
    except ValueError:
        return 0.0
    return number if number > 0 else 0.0


class Spending:
    """What the batch has submitted and spent, against its caps.

    `sent` and `spent` start from what an earlier run of the same batch did (resume,
    retry); a job counts once per attempt, however often a deferred submit is sent again.
    """

    def __init__(
        self,
        plan: Plan,
        *,
        cost_fields: Mapping[str, str | None],
        units: Mapping[str, str] | None = None,
        sent: Mapping[str, int] | None = None,
        spent: Mapping[str, float] | None = None,
    ) -> None:
        self.batch = plan.budget
        self.caps: dict[str, Budget] = {name: s.budget for name, s in plan.providers.items()}
        self.cost_fields = dict(cost_fields)
        self.units = dict(units or {})
        self.sent: dict[str, int] = dict(sent or {})
        self.spent: dict[str, float] = dict(spent or {})
        self._counted: set[tuple[str, int]] = set()
        self.announced: set[str | None] = set()  # caps already reported (None: the batch)

    @property
    def active(self) -> bool:
        """Any cap at all (else the engine need not ask)."""
        caps = [self.batch, *self.caps.values()]
        return any(c.jobs is not None or c.credits is not None for c in caps)

    def total_sent(self) -> int:
        return sum(self.sent.values())

    def refuse(self, job: JobRecord) -> Refusal | None:
        """Why `job` may not be submitted now, or None. A job already counted (a deferred
        submit sent again) is never refused: it may already exist remotely."""
        provider = job.spec.provider
        if (job.spec.id, job.attempt) in self._counted:
            return None
        cap = self.caps.get(provider, Budget())
        if cap.jobs is not None and self.sent.get(provider, 0) >= cap.jobs:
            return Refusal(
                provider,
                f"budget: {provider} reached its cap of {cap.jobs} submitted jobs "
                f"(providers.{provider}.budget.jobs); not submitted",
            )
        if cap.credits is not None and self.spent.get(provider, 0.0) >= cap.credits:
            return self._out_of_credits(provider, cap.credits)
        if self.batch.jobs is not None and self.total_sent() >= self.batch.jobs:
            return Refusal(
                None,
                f"budget: the batch reached its cap of {self.batch.jobs} submitted jobs "
                "(budget.jobs); not submitted",
            )
        return None

    def count(self, job: JobRecord) -> None:
        """`job` is being submitted (once per attempt)."""
        key = (job.spec.id, job.attempt)
        if key not in self._counted:
            self._counted.add(key)
            self.sent[job.spec.provider] = self.sent.get(job.spec.provider, 0) + 1

    def charge(self, provider: str, outcome: Mapping[str, object]) -> Refusal | None:
        """Add what a finished job reported; the Refusal when that reaches the cap."""
        cost = cost_of(outcome, self.cost_fields.get(provider))
        if not cost:
            return None
        self.spent[provider] = self.spent.get(provider, 0.0) + cost
        cap = self.caps.get(provider, Budget()).credits
        if cap is not None and self.spent[provider] >= cap:
            return self._out_of_credits(provider, cap)
        return None

    def _out_of_credits(self, provider: str, cap: float) -> Refusal:
        unit = self.units.get(provider, "credits")
        return Refusal(
            provider,
            f"budget: {provider} reached its cap of {_fmt(cap)} {unit} "
            f"({_fmt(self.spent.get(provider, 0.0))} reported; "
            f"providers.{provider}.budget.credits); not submitted",
        )


def already_sent(records: Iterable[JobRecord]) -> dict[str, int]:
    """provider → submits an earlier run of this batch made: every earlier attempt, and
    the current one once a submit request went out."""
    sent: dict[str, int] = {}
    for record in records:
        n = (record.attempt - 1) + (record.attempts > 0)
        if n:
            sent[record.spec.provider] = sent.get(record.spec.provider, 0) + n
    return sent
