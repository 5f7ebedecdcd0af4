"""runner.engine.outcomes: every cell of the decision table, the budgets, and `classify`.

The expected decisions are written here a second time, row by failure (submit, poll,
fetch), so a changed cell in the table shows up as a disagreement; the invariants below
hold over the whole table whatever its cells say.
"""

from __future__ import annotations

import itertools

import pytest

from runner.engine.outcomes import (
    MAX_POLL_ERRORS,
    MAX_SUBMIT_ATTEMPTS,
    TABLE,
    Budget,
    Decision,
    Delay,
    Failure,
    Job,
    Phase,
    Provider,
    classify,
    decide,
)
from runner.errors import ErrorKind, ProviderCallError

J, P, W, B = Job, Provider, Delay, Budget
WAIT_DOWN = (J.WAIT, P.DOWN, W.PROVIDER)
REFETCH_DOWN = (J.REFETCH, P.DOWN, W.PROVIDER, B.ERRORS)

# failure: (submit, poll, fetch); each (job, provider, delay[, budget]).
EXPECTED: dict[Failure, tuple[tuple[object, ...], ...]] = {
    Failure.UNREACHABLE: ((*WAIT_DOWN, B.ATTEMPTS), (*WAIT_DOWN, B.ERRORS), REFETCH_DOWN),
    Failure.DROPPED: ((J.RECONCILE, P.NONE, W.NONE), (*WAIT_DOWN, B.ERRORS), REFETCH_DOWN),
    Failure.SERVER_ERROR: ((J.RECONCILE, P.NONE, W.NONE), (*WAIT_DOWN, B.ERRORS), REFETCH_DOWN),
    Failure.REFUSED: (
        (J.RESEND, P.NONE, W.BACKOFF, B.ATTEMPTS),
        (*WAIT_DOWN, B.ERRORS),
        REFETCH_DOWN,
    ),
    Failure.THROTTLED: (
        (J.RESEND, P.NONE, W.NONE, B.ATTEMPTS),
        (J.REPOLL, P.NONE, W.NONE),
        (J.REFETCH, P.NONE, W.NONE, B.ERRORS),
    ),
    Failure.BUSY: (
        (J.RESEND, P.NONE, W.HINT, B.ATTEMPTS),
        (J.REPOLL, P.NONE, W.HINT),
        (J.REFETCH, P.NONE, W.HINT, B.ERRORS),
    ),
    Failure.PENDING_CAP: (
        (J.RESEND, P.LOWER_CAP, W.SLOT, B.ATTEMPTS),
        (J.REPOLL, P.NONE, W.HINT),
        (J.REFETCH, P.NONE, W.HINT, B.ERRORS),
    ),
    Failure.AUTH: ((J.SKIP, P.STOP_AUTH), (J.FAIL, P.STOP_AUTH), (J.FAIL, P.STOP_AUTH)),
    Failure.CREDITS: ((J.SKIP, P.STOP_CREDITS), (J.FAIL,), (J.FAIL,)),
    Failure.INVALID: ((J.REJECT,), (J.FAIL,), (J.FAIL,)),
    Failure.NOT_FOUND: ((J.REJECT,), (J.FAIL,), (J.FAIL,)),
    Failure.GONE: ((J.RECONCILE,), (J.FAIL,), (J.EXPIRE,)),
    Failure.OTHER: ((J.RECONCILE,), (J.FAIL,), (J.FAIL,)),
    Failure.OFFSITE: ((J.RECONCILE,), (J.FAIL,), (J.FAIL,)),
}
PHASES = (Phase.SUBMIT, Phase.POLL, Phase.FETCH)
CELLS = [
    (phase, failure, EXPECTED[failure][i]) for failure in Failure for i, phase in enumerate(PHASES)
]


def test_the_table_has_exactly_one_cell_per_phase_and_failure() -> None:
    assert set(TABLE) == set(itertools.product(Phase, Failure))
    assert set(EXPECTED) == set(Failure)


@pytest.mark.parametrize(("phase", "failure", "expected"), CELLS)
def test_every_cell(phase: Phase, failure: Failure, expected: tuple[object, ...]) -> None:
    assert decide(phase, failure) == Decision(*expected)  # type: ignore[arg-type]


# -- invariants over the whole table ---------------------------------------------------------

NOT_ACCEPTED = {
    Failure.UNREACHABLE,
    Failure.REFUSED,
    Failure.THROTTLED,
    Failure.BUSY,
    Failure.PENDING_CAP,
}


@pytest.mark.parametrize("failure", list(Failure))
def test_a_submit_is_sent_again_only_when_provably_not_accepted(failure: Failure) -> None:
    again = decide(Phase.SUBMIT, failure).job in (Job.RESEND, Job.WAIT)
    assert again is (failure in NOT_ACCEPTED)


@pytest.mark.parametrize(
    ("phase", "failure"),
    list(
        itertools.product(
            PHASES,
            (Failure.UNREACHABLE, Failure.DROPPED, Failure.SERVER_ERROR, Failure.REFUSED),
        )
    ),
)
def test_no_network_failure_or_5xx_ends_a_remote_job_while_its_provider_is_down(
    phase: Phase, failure: Failure
) -> None:
    decision = decide(phase, failure, attempts=1, errors=MAX_POLL_ERRORS * 10, provider_down=True)
    assert decision.job in (Job.WAIT, Job.REFETCH, Job.RECONCILE, Job.RESEND)


@pytest.mark.parametrize(("phase", "failure"), list(itertools.product(PHASES, Failure)))
def test_a_waiting_job_is_held_for_its_provider_and_nothing_else_waits_for_it(
    phase: Phase, failure: Failure
) -> None:
    decision = decide(phase, failure)
    held = decision.delay is Delay.PROVIDER
    assert held is (decision.provider is Provider.DOWN)


# -- budgets ---------------------------------------------------------------------------------


def test_a_submit_not_accepted_gives_up_after_its_attempts() -> None:
    for failure in NOT_ACCEPTED:
        assert decide(Phase.SUBMIT, failure, attempts=MAX_SUBMIT_ATTEMPTS - 1).exhausted is False
        spent = decide(Phase.SUBMIT, failure, attempts=MAX_SUBMIT_ATTEMPTS)
        assert spent.job is Job.REJECT
        assert spent.exhausted


def test_a_job_gives_up_after_its_errors_only_while_its_provider_answers_others() -> None:
    last = MAX_POLL_ERRORS - 1  # errors already counted: this one is the last allowed
    for phase, give_up in ((Phase.POLL, Job.FAIL), (Phase.FETCH, Job.FAIL)):
        assert decide(phase, Failure.SERVER_ERROR, errors=last - 1).job is not give_up
        spent = decide(phase, Failure.SERVER_ERROR, errors=last)
        assert (spent.job, spent.exhausted, spent.provider) == (give_up, True, Provider.DOWN)
        during = decide(phase, Failure.SERVER_ERROR, errors=last, provider_down=True)
        assert during.exhausted is False


def test_a_rate_limited_poll_never_spends_the_jobs_errors() -> None:
    assert decide(Phase.POLL, Failure.THROTTLED, errors=10**6).job is Job.REPOLL


# -- classify --------------------------------------------------------------------------------


def error(kind: ErrorKind, provider: str = "p", **kw: object) -> ProviderCallError:
    return ProviderCallError("x", provider=provider, job_id=None, kind=kind, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "failure"),
    [
        (error(ErrorKind.TRANSIENT, not_accepted=True, network="connection refused"),
         Failure.UNREACHABLE),
        (error(ErrorKind.TRANSIENT, network="connection reset"), Failure.DROPPED),
        (error(ErrorKind.TRANSIENT, network="timed out"), Failure.DROPPED),
        (error(ErrorKind.TRANSIENT, status_code=502), Failure.SERVER_ERROR),
        (error(ErrorKind.TRANSIENT, "spidra", status_code=502), Failure.REFUSED),
        (error(ErrorKind.TRANSIENT, "spidra", status_code=503), Failure.REFUSED),
        (error(ErrorKind.TRANSIENT, "spidra", status_code=504), Failure.SERVER_ERROR),
        (error(ErrorKind.TRANSIENT, "spidra", status_code=500), Failure.SERVER_ERROR),
        (error(ErrorKind.TRANSIENT, "spidra", network="connection reset"), Failure.DROPPED),
        (error(ErrorKind.TRANSIENT, "pulse", status_code=503), Failure.SERVER_ERROR),
        (error(ErrorKind.TRANSIENT, "bulkgrid", status_code=502), Failure.SERVER_ERROR),
        (error(ErrorKind.RATE_LIMITED, status_code=429, not_accepted=True), Failure.THROTTLED),
        (error(ErrorKind.BUSY, status_code=503, not_accepted=True), Failure.BUSY),
        (error(ErrorKind.BUSY, code="TOO_MANY_PENDING_JOBS", not_accepted=True),
         Failure.PENDING_CAP),
        (error(ErrorKind.AUTH, status_code=401), Failure.AUTH),
        (error(ErrorKind.CREDITS, status_code=402), Failure.CREDITS),
        (error(ErrorKind.INVALID, status_code=422), Failure.INVALID),
        (error(ErrorKind.NOT_FOUND, status_code=404), Failure.NOT_FOUND),
        (error(ErrorKind.GONE, status_code=410), Failure.GONE),
        (error(ErrorKind.GONE, status_code=410, offsite=True), Failure.GONE),
        (error(ErrorKind.TRANSIENT, status_code=500, offsite=True), Failure.OFFSITE),
        (error(ErrorKind.TRANSIENT, network="connection refused", offsite=True),
         Failure.OFFSITE),
        (error(ErrorKind.OTHER, status_code=409), Failure.OTHER),
    ],
)  # fmt: skip
def test_classify(exc: ProviderCallError, failure: Failure) -> None:
    assert classify(exc) is failure
