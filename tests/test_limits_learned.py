"""Limits found, not guessed: learned rates and in-flight caps (runner.http.limits), where
each limit comes from (manifest settings, `runner plan`), and the engine raising a learned
cap while the provider accepts and lowering it on the provider's concurrency errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner.engine.outcomes import CONCURRENCY_CODES, Failure, classify
from runner.errors import ErrorKind, ProviderCallError
from runner.http.limits import (
    LEARN_BACKOFF,
    LEARN_HEADROOM,
    LEARN_SECONDS,
    PROBE_ROUNDS,
    SAFETY,
    Aimd,
    Concurrency,
    Gate,
)
from runner.lifecycle import State
from runner.plan import Limits, Rate
from runner.providers.registry import PROVIDERS
from runner.remote import RemoteRef

# -- the learned rate -----------------------------------------------------------------------------


def test_a_declared_rate_never_climbs_above_its_ceiling() -> None:
    aimd = Aimd(10.0)
    assert aimd.rate(0.0) == aimd.rate(1e6) == 10.0


def test_a_learned_rate_starts_at_the_guess_and_climbs_while_accepted() -> None:
    aimd = Aimd(5.0, learn=True)
    assert aimd.rate(100.0) == 5.0  # the climb starts at first use
    assert aimd.rate(100.0 + LEARN_SECONDS) == pytest.approx(10.0)
    assert aimd.rate(100.0 + 3 * LEARN_SECONDS) == pytest.approx(20.0)
    assert aimd.rate(1e9) == pytest.approx(5.0 * LEARN_HEADROOM)  # bounded headroom


def test_the_first_429_says_where_the_limit_is() -> None:
    aimd = Aimd(5.0, recovery=30.0, learn=True)
    aimd.rate(0.0)
    at = aimd.rate(20.0)  # climbed to 15/s
    assert at == pytest.approx(15.0)
    assert aimd.throttled(sent_at=19.9, now=20.0)
    assert not aimd.learning
    assert aimd.ceiling == pytest.approx(15.0 * LEARN_BACKOFF)
    assert aimd.rate(20.0) == pytest.approx(7.5)  # halved, as a declared one would
    assert aimd.rate(1e6) == pytest.approx(15.0 * LEARN_BACKOFF)  # and never above again


def test_a_learned_rate_converges_below_a_hidden_limit_with_few_429s() -> None:
    real = 12.0
    aimd = Aimd(3.0, recovery=10.0, learn=True)
    t, throttles = 0.0, 0
    samples = []
    while t < 300.0:
        if aimd.rate(t) > real:
            throttles += aimd.throttled(sent_at=t - 0.01, now=t)
        samples.append(aimd.rate(t))
        t += 0.25
    late = samples[len(samples) // 2 :]
    assert max(late) <= real  # after the first 429 it stays below the hidden limit
    assert min(late) >= real * LEARN_BACKOFF * 0.9  # and uses most of it
    assert throttles <= 2


def test_a_policy_header_ends_the_guessing() -> None:
    aimd = Aimd(5.0, learn=True)
    aimd.lower_ceiling(8.0)
    assert not aimd.learning
    assert aimd.rate(1e6) == pytest.approx(8.0)


# -- the learned in-flight cap ----------------------------------------------------------------


def test_a_published_cap_does_not_grow() -> None:
    cap = Concurrency(10)
    cap.accepted(10)
    assert cap.cap == 10


def test_a_learned_cap_grows_by_one_per_accepted_submit_while_full() -> None:
    cap = Concurrency(5, learn=True)
    cap.accepted(3)  # the cap did not bind: nothing learned
    assert cap.cap == 5
    for in_flight in range(5, 20):
        cap.accepted(in_flight)
    assert cap.cap == 20


def test_a_concurrency_error_sets_the_cap_then_it_grows_slowly() -> None:
    cap = Concurrency(5, learn=True)
    for in_flight in range(5, 30):
        cap.accepted(in_flight)
    cap.refused(12)  # the provider holds 12 of ours and refuses the 13th
    assert (cap.cap, cap.lowered, cap.slow_start) == (12, 1, False)
    for _ in range(12 * PROBE_ROUNDS - 1):  # PROBE_ROUNDS rounds of accepted submits ...
        cap.accepted(cap.cap)
    assert cap.cap == 12
    cap.accepted(12)
    assert cap.cap == 13  # ... raise it by one


def test_a_refusal_never_sets_the_cap_below_one() -> None:
    cap = Concurrency(5, learn=True)
    cap.refused(0)
    assert cap.cap == 1


def test_the_gate_reports_each_limit_with_its_origin() -> None:
    limits = Limits(
        requests=Rate(5, 1.0),
        endpoints={"results": Rate(2, 1.0)},
        in_flight=10,
        origin={"requests": "learned", "results": "published", "in_flight": "learned"},
    )
    gate = Gate("p", limits, pool_size=2, clock=Still())
    gate.jobs_in_flight = 10
    gate.accepted()
    report = gate.report()
    assert report["requests"]["origin"] == "learned"
    assert report["requests"]["rate_per_second"] == pytest.approx(5 * SAFETY)
    assert report["requests"]["found"] is False
    assert report["results"] == {"origin": "published", "rate_per_second": 1.9, "throttled": 0}
    assert report["in_flight"] == {"origin": "learned", "cap": 11, "lowered": 0}


def test_too_many_on_a_provider_without_a_cap_starts_one() -> None:
    gate = Gate("p", Limits(), pool_size=2, clock=Still())
    gate.jobs_in_flight = 4
    assert gate.can_submit()
    gate.too_many()
    assert gate.in_flight_cap == 4
    assert not gate.can_submit()


class Still:
    def now(self) -> float:
        return 7.0

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("nothing waits here")


# -- which limits are published, which learned -----------------------------------------------


def test_every_provider_says_where_each_default_limit_comes_from() -> None:
    for name, info in PROVIDERS.items():
        limits = info.default_limits
        assert limits.origins() == dict(limits.origin), name  # none left "declared"
        assert set(limits.origin.values()) <= {"published", "learned"}, name


def test_only_documented_numbers_are_published() -> None:
    origin = {name: info.default_limits.origin for name, info in PROVIDERS.items()}
    assert origin["spidra"] == {"requests": "published", "in_flight": "published"}
    assert origin["lobstr"]["in_flight"] == "learned"  # a per-plan quota, no number
    assert origin["lobstr"]["results"] == "published"  # 2 per second, documented
    for name in ("bulkgrid", "skop", "pulse"):
        assert origin[name] == {"requests": "learned", "in_flight": "learned"}


@pytest.mark.parametrize("code", sorted(CONCURRENCY_CODES))
def test_concurrency_and_slot_errors_lower_the_cap(code: str) -> None:
    exc = ProviderCallError(
        "x", provider="p", job_id="j", kind=ErrorKind.BUSY, code=code, status_code=400
    )
    assert classify(exc) is Failure.PENDING_CAP


def test_lobstr_run_in_progress_is_busy_not_a_concurrency_limit() -> None:
    exc = ProviderCallError(
        "x", provider="p", job_id="j", kind=ErrorKind.BUSY, code="RunInProgress", status_code=400
    )
    assert classify(exc) is Failure.BUSY


def _manifest(tmp_path: Path, limits: dict[str, Any] | None) -> Path:
    import yaml

    provider: dict[str, Any] = {"api_key": "${LOBSTR_API_KEY}"}
    if limits is not None:
        provider["limits"] = limits
    document = {
        "version": 1,
        "name": "origins",
        "providers": {"lobstr": provider},
        "jobs": [
            {
                "id": "one",
                "provider": "lobstr",
                "type": "run",
                "params": {"squid": "0123456789abcdef0123456789abcdef"},
            }
        ],
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_declared_limit_overrides_the_origin_one_key_at_a_time(tmp_path: Path) -> None:
    from runner.manifest.loader import load_manifest

    declared = {"in_flight": 7, "status": {"rate": 30, "per": "1m"}}
    plan = load_manifest(_manifest(tmp_path, declared), sandbox_keys=True).plan
    limits = plan.providers["lobstr"].limits
    assert limits.in_flight == 7
    assert limits.origin_of("in_flight") == "declared"
    assert limits.origin_of("status") == "declared"
    assert limits.origin_of("submit") == "published"
    assert limits.origin_of("download") == "learned"
    gate = Gate("lobstr", limits, pool_size=2, clock=Still())
    gate.jobs_in_flight = 7
    gate.accepted()
    assert gate.in_flight_cap == 7  # declared: never exceeded


def test_runner_plan_shows_where_each_limit_comes_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from runner.cli import main

    path = _manifest(tmp_path, {"in_flight": 7})
    assert main(["plan", str(path), "--json"]) == 0
    limits = json.loads(capsys.readouterr().out)["providers"]["lobstr"]["limits"]
    assert limits["origin"] == {
        "submit": "published",
        "status": "published",
        "results": "published",
        "download": "learned",
        "in_flight": "declared",
    }
    assert main(["plan", str(path)]) == 0
    text = capsys.readouterr().out
    assert "7 declared" in text
    assert "90/1m published" in text
    assert "20/1m learned" in text
    assert "learned: no published number" in text


# -- the engine: a learned cap grows while the provider accepts ------------------------------


@pytest.mark.anyio
async def test_the_engine_raises_a_learned_cap_and_lowers_it_on_a_slot_error() -> None:
    from runner.engine.outcomes import MAX_SUBMIT_ATTEMPTS
    from runner.providers.base import Submitted
    from tests.test_engine import FakeAdapter, done, make_engine, make_plan, status

    limits = Limits(in_flight=2, origin={"in_flight": "learned"})
    refused: list[str] = []

    def submit(job_id: str, n: int) -> Submitted | Exception:
        if adapter.live >= 5:  # the provider runs 5 of ours at most
            refused.append(job_id)
            return ProviderCallError(
                "slots",
                provider="spidra",
                job_id=job_id,
                kind=ErrorKind.BUSY,
                code="SlotsLimitExceeded",
                status_code=400,
                not_accepted=True,
            )
        assert n < MAX_SUBMIT_ATTEMPTS
        return Submitted(RemoteRef(f"r-{job_id}"), status("waiting"))

    adapter = FakeAdapter(polls=lambda j, n: done() if n >= 4 else status("active"), submit=submit)
    engine, _, _ = make_engine(make_plan(30, limits=limits), adapter, pool=4)
    result = await engine.run()
    assert result.counts == {State.SUCCEEDED: 30}
    assert adapter.peak_live == 5  # it grew past the starting 2, up to what the provider runs
    assert 1 <= len(refused) <= 3  # found with a few refusals, not a storm
    report = engine.limits["spidra"]["in_flight"]
    assert report["origin"] == "learned"
    assert report["lowered"] >= 1
    assert report["cap"] <= 6


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_the_pool_is_sized_for_where_a_learned_rate_may_climb() -> None:
    from runner.http.limits import pool_size_for

    guessed = Limits(requests=Rate(5, 1.0), origin={"requests": "learned"})
    assert pool_size_for(Limits(requests=Rate(5, 1.0))) == 4  # declared 5/s: 2 would do
    assert pool_size_for(guessed) == 16  # 5/s may become 80/s


# -- a real run records them ----------------------------------------------------------------------


@pytest.mark.e2e
def test_a_run_records_each_limit_s_origin_and_final_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the sandbox on 127.0.0.1: the log says at the start where each limit comes
    from, and at the end (as batch.json does) what each became."""
    from runner.cli import main
    from tests.e2e.helpers import manifest, pulse_jobs

    monkeypatch.setenv("PULSE_API_KEY", "pulse_origin")
    providers = {"pulse": {"api_key": "${PULSE_API_KEY}", "limits": {"in_flight": 4}}}
    path = manifest(tmp_path, [pulse_jobs(6)], providers=providers)
    out = tmp_path / "results"
    assert main(["run", str(path), "--sandbox", "--out", str(out), "--quiet"]) == 0
    batch = (out / "e2e" / "latest").resolve()
    events = [json.loads(line) for line in (batch / "log.jsonl").open()]
    assert events[0]["limits"] == {"pulse": {"requests": "learned", "in_flight": "declared"}}
    finished = events[-1]
    assert finished["event"] == "batch.finished"
    pulse = finished["limits"]["pulse"]
    assert pulse["in_flight"] == {"origin": "declared", "cap": 4, "lowered": 0}
    assert pulse["requests"]["origin"] == "learned"
    assert pulse["requests"]["found"] is False  # no 429: still climbing
    assert pulse["requests"]["rate_per_second"] >= 10 * SAFETY  # from the guess, upward
    assert json.loads((batch / "batch.json").read_text())["limits"] == finished["limits"]
