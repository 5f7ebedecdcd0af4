"""The give-up decision keeps what the table said about the budget and the provider (found
unguarded by the mutation run, make mutate)."""

from __future__ import annotations

from runner.engine.outcomes import (
    GIVE_UP,
    MAX_POLL_ERRORS,
    MAX_SUBMIT_ATTEMPTS,
    TABLE,
    Budget,
    Decision,
    decide,
)


def test_a_spent_budget_gives_up_and_still_says_which_budget_it_was() -> None:
    spent_any = False
    for (phase, failure), decision in TABLE.items():
        if decision.budget is Budget.NONE:
            continue
        spent = decide(phase, failure, attempts=MAX_SUBMIT_ATTEMPTS, errors=MAX_POLL_ERRORS - 1)
        assert spent == Decision(
            GIVE_UP[phase], decision.provider, budget=decision.budget, exhausted=True
        ), (phase, failure)
        spent_any = True
    assert spent_any
