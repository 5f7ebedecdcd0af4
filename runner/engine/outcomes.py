"""What a failed request means: for the job, for its provider, and when to try again.

`classify` names the failure; `decide(phase, failure, ...)` reads the one table below (a
pure function, like lifecycle's transitions). The engine only carries the Decision out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from runner.errors import ErrorKind, ProviderCallError

MAX_SUBMIT_ATTEMPTS = 12  # sends of one submit that were provably not accepted, then fail
MAX_POLL_ERRORS = 5  # failures of one job's requests while its provider looked up, then fail


class Phase(StrEnum):
    SUBMIT = "submit"
    POLL = "poll"
    FETCH = "fetch"


class Failure(StrEnum):
    """A failed provider request, by what it proves."""

    UNREACHABLE = "unreachable"  # no HTTP answer, the request never left (refused, DNS)
    DROPPED = "dropped"  # no HTTP answer after it left (reset, read timeout): may have acted
    SERVER_ERROR = "server_error"  # a 5xx (or another answer the provider calls temporary)
    REFUSED = "refused"  # a 5xx its provider says was not acted on (REFUSED_5XX)
    THROTTLED = "throttled"  # 429: the gate is paused already
    BUSY = "busy"  # 503 with a retry hint, or a busy code: not accepted, try after the hint
    PENDING_CAP = "pending_cap"  # a concurrency or slot refusal: fewer jobs at once
    AUTH = "auth"  # the key was refused
    CREDITS = "credits"  # out of credits
    INVALID = "invalid"  # the provider refused this request as such (validation)
    NOT_FOUND = "not_found"
    GONE = "gone"  # 410: a result that can never be fetched again
    OTHER = "other"  # any other answer
    OFFSITE = "offsite"  # a storage host's failure (a signed URL, a document site)


class Job(StrEnum):
    """What happens to the job."""

    RESEND = "resend"  # planned again, sent after `delay` (provably not accepted)
    WAIT = "wait"  # its provider did not answer: submit or poll again once it does
    RECONCILE = "reconcile"  # it may have been accepted: look it up, never re-send blindly
    REPOLL = "repoll"  # poll again after `delay`
    REFETCH = "refetch"  # poll and fetch again (from an empty directory) once it answers
    REJECT = "reject"  # failed: the provider refused this job
    FAIL = "fail"  # failed: it cannot go on
    SKIP = "skip"  # skipped: its provider stopped before it was sent
    EXPIRE = "expire"  # expired: the result is gone


class Provider(StrEnum):
    """What happens to the job's provider."""

    NONE = "none"
    DOWN = "down"  # it did not answer: pause it and probe (runner.http.limits.Outage)
    STOP_AUTH = "stop_auth"  # send it nothing more
    STOP_CREDITS = "stop_credits"  # submit nothing more to it
    LOWER_CAP = "lower_cap"  # its in-flight cap becomes the jobs in flight now


class Delay(StrEnum):
    NONE = "none"  # at once (the gate already holds a pause if one is due)
    BACKOFF = "backoff"  # the job's jittered retry backoff
    HINT = "hint"  # the provider's retry hint, else the backoff
    SLOT = "slot"  # when another job of the provider ends (at once), else the backoff
    PROVIDER = "provider"  # when the provider answers again


class Budget(StrEnum):
    """The bounded allowance a failure spends; once spent, the job gives up."""

    NONE = "none"
    ATTEMPTS = "attempts"  # submit attempts (MAX_SUBMIT_ATTEMPTS), always spent
    ERRORS = "errors"  # the job's errors (MAX_POLL_ERRORS), spent only while its provider
    # answered others: an outage is the provider's state, never counted against its jobs


@dataclass(frozen=True, slots=True)
class Decision:
    job: Job
    provider: Provider = Provider.NONE
    delay: Delay = Delay.NONE
    budget: Budget = Budget.NONE
    exhausted: bool = False  # the budget was spent: this is the phase's give-up


# (provider, status) of a 5xx that proves a submit was not acted on, and the proof. Only
# where the provider's documentation or its own client says so: any other 5xx to a submit
# may come after the job was created (a gateway fails after its upstream acted), so it is
# looked up where the provider can list jobs, and otherwise stays submit_unknown. (A 503
# with a retry hint is BUSY already; so is Skop's documented 503 service_unavailable.)
REFUSED_5XX: dict[tuple[str, int], str] = {
    ("spidra", 502): "Spidra's own client sends a POST again after a 502 (never after a 504)",
    ("spidra", 503): "Spidra's own client sends a POST again after a 503",
}

# Error codes by which a provider refuses a job because too many of ours run at once (its
# pending-job, slot or concurrency quota): the job was not created, and the in-flight cap
# becomes what the provider holds (docs/engineering.md#learned-limits).
CONCURRENCY_CODES = frozenset(
    {
        "TOO_MANY_PENDING_JOBS",  # Spidra (docs/providers/spidra.md#limits)
        "SlotsLimitExceeded",  # Lobstr (docs/providers/lobstr.md#limits)
        "ConcurrencyLimitExceeded",  # Lobstr
        "concurrency_limit_exceeded",  # Skop (docs/providers/skop.md#limits)
    }
)

_S, _P, _F = Phase.SUBMIT, Phase.POLL, Phase.FETCH
D = Decision
WAIT_SUBMIT = D(Job.WAIT, Provider.DOWN, Delay.PROVIDER, Budget.ATTEMPTS)
WAIT_POLL = D(Job.WAIT, Provider.DOWN, Delay.PROVIDER, Budget.ERRORS)
REFETCH_LATER = D(Job.REFETCH, Provider.DOWN, Delay.PROVIDER, Budget.ERRORS)
RECONCILE = D(Job.RECONCILE)
FAIL = D(Job.FAIL)

# (phase, failure) → decision. Read a row as: "a <failure> while <phase> → the job does X,
# the provider Y, the next try comes after Z, spending budget B".
TABLE: dict[tuple[Phase, Failure], Decision] = {
    # submit: re-sent only when provably not accepted
    (_S, Failure.UNREACHABLE): WAIT_SUBMIT,
    (_S, Failure.DROPPED): RECONCILE,  # one POST is never retried: weak proof of an outage
    (_S, Failure.SERVER_ERROR): RECONCILE,
    (_S, Failure.REFUSED): D(Job.RESEND, Provider.NONE, Delay.BACKOFF, Budget.ATTEMPTS),
    (_S, Failure.THROTTLED): D(Job.RESEND, Provider.NONE, Delay.NONE, Budget.ATTEMPTS),
    (_S, Failure.BUSY): D(Job.RESEND, Provider.NONE, Delay.HINT, Budget.ATTEMPTS),
    (_S, Failure.PENDING_CAP): D(Job.RESEND, Provider.LOWER_CAP, Delay.SLOT, Budget.ATTEMPTS),
    (_S, Failure.AUTH): D(Job.SKIP, Provider.STOP_AUTH),
    (_S, Failure.CREDITS): D(Job.SKIP, Provider.STOP_CREDITS),
    (_S, Failure.INVALID): D(Job.REJECT),
    (_S, Failure.NOT_FOUND): D(Job.REJECT),
    (_S, Failure.GONE): RECONCILE,
    (_S, Failure.OTHER): RECONCILE,
    (_S, Failure.OFFSITE): RECONCILE,
    # poll: GETs were retried already; what still fails is the provider's state
    (_P, Failure.UNREACHABLE): WAIT_POLL,
    (_P, Failure.DROPPED): WAIT_POLL,
    (_P, Failure.SERVER_ERROR): WAIT_POLL,
    (_P, Failure.REFUSED): WAIT_POLL,
    (_P, Failure.THROTTLED): D(Job.REPOLL, Provider.NONE, Delay.NONE),
    (_P, Failure.BUSY): D(Job.REPOLL, Provider.NONE, Delay.HINT),
    (_P, Failure.PENDING_CAP): D(Job.REPOLL, Provider.NONE, Delay.HINT),
    (_P, Failure.AUTH): D(Job.FAIL, Provider.STOP_AUTH),
    (_P, Failure.CREDITS): FAIL,
    (_P, Failure.INVALID): FAIL,
    (_P, Failure.NOT_FOUND): FAIL,
    (_P, Failure.GONE): FAIL,
    (_P, Failure.OTHER): FAIL,
    (_P, Failure.OFFSITE): FAIL,
    # fetch: the remote job is done; fetch it again rather than lose it to the network
    (_F, Failure.UNREACHABLE): REFETCH_LATER,
    (_F, Failure.DROPPED): REFETCH_LATER,
    (_F, Failure.SERVER_ERROR): REFETCH_LATER,
    (_F, Failure.REFUSED): REFETCH_LATER,
    (_F, Failure.THROTTLED): D(Job.REFETCH, Provider.NONE, Delay.NONE, Budget.ERRORS),
    (_F, Failure.BUSY): D(Job.REFETCH, Provider.NONE, Delay.HINT, Budget.ERRORS),
    (_F, Failure.PENDING_CAP): D(Job.REFETCH, Provider.NONE, Delay.HINT, Budget.ERRORS),
    (_F, Failure.AUTH): D(Job.FAIL, Provider.STOP_AUTH),
    (_F, Failure.CREDITS): FAIL,
    (_F, Failure.INVALID): FAIL,
    (_F, Failure.NOT_FOUND): FAIL,
    (_F, Failure.GONE): D(Job.EXPIRE),
    (_F, Failure.OTHER): FAIL,
    (_F, Failure.OFFSITE): FAIL,  # a storage host's trouble is not the provider's outage
}

# What a job does once the budget its failure spends is gone.
GIVE_UP = {Phase.SUBMIT: Job.REJECT, Phase.POLL: Job.FAIL, Phase.FETCH: Job.FAIL}

_BY_KIND = {
    ErrorKind.RATE_LIMITED: Failure.THROTTLED,
    ErrorKind.BUSY: Failure.BUSY,
    ErrorKind.AUTH: Failure.AUTH,
    ErrorKind.CREDITS: Failure.CREDITS,
    ErrorKind.INVALID: Failure.INVALID,
    ErrorKind.NOT_FOUND: Failure.NOT_FOUND,
    ErrorKind.GONE: Failure.GONE,
    ErrorKind.OTHER: Failure.OTHER,
}


def classify(exc: ProviderCallError) -> Failure:
    """The Failure a ProviderCallError proves."""
    if exc.offsite and exc.kind is not ErrorKind.GONE:  # a 410 is gone wherever it is
        return Failure.OFFSITE
    if exc.code in CONCURRENCY_CODES:
        return Failure.PENDING_CAP
    if exc.kind is ErrorKind.TRANSIENT:
        if exc.not_accepted:
            return Failure.UNREACHABLE
        if exc.network is not None:
            return Failure.DROPPED
        if (exc.provider, exc.status_code) in REFUSED_5XX:
            return Failure.REFUSED
        return Failure.SERVER_ERROR
    return _BY_KIND.get(exc.kind, Failure.OTHER)


def decide(
    phase: Phase,
    failure: Failure,
    *,
    attempts: int = 0,
    errors: int = 0,
    provider_down: bool = False,
) -> Decision:
    """The table's decision, or the phase's give-up once the job's budget is spent.

    `attempts`: submit attempts sent so far (this one included); `errors`: the job's errors
    counted so far (this one not included); `provider_down`: an outage of the job's provider
    was already known when this failure came (then it costs the job nothing)."""
    decision = TABLE[(phase, failure)]
    spent = (decision.budget is Budget.ATTEMPTS and attempts >= MAX_SUBMIT_ATTEMPTS) or (
        counts_error(decision, provider_down=provider_down) and errors + 1 >= MAX_POLL_ERRORS
    )
    if spent:
        return Decision(GIVE_UP[phase], decision.provider, budget=decision.budget, exhausted=True)
    return decision


def counts_error(decision: Decision, *, provider_down: bool) -> bool:
    """Does this decision spend one of the job's errors?"""
    return decision.budget is Budget.ERRORS and not provider_down
