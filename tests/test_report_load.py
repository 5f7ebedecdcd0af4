"""The log lines runner report needs from a run: provider.limits and batch.estimate at the
start, provider.load samples while it runs (only when a number moved, and a last one when
the run ends)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio

from runner.batch.load import LoadSampler, log_plan
from runner.estimate import estimate_plan
from runner.http.limits import Gate
from runner.plan import Limits, Rate
from runner.store.log import BatchLog
from tests.test_results import make_plan


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_limits_and_estimate_are_logged_for_providers_with_jobs(tmp_path: Path) -> None:
    plan = make_plan(3)
    with BatchLog(tmp_path / "log.jsonl", batch_id="b", clock=lambda: 0.0) as log:
        log_plan(log, plan)
    limits, estimate = _lines(tmp_path / "log.jsonl")
    assert limits["event"] == "provider.limits"
    assert limits["provider"] == "spidra"
    assert (limits["requests"], limits["endpoints"], limits["in_flight"]) == (None, {}, None)
    expected = estimate_plan(plan)
    assert estimate["event"] == "batch.estimate"
    assert estimate["expected_seconds"] == round(expected.expected_seconds, 3)
    assert estimate["providers"] == {
        "spidra": {
            "bound": expected.providers[0].bound,
            "expected_seconds": round(expected.providers[0].expected_seconds, 3),
            "requests_expected": expected.providers[0].requests_expected,
        }
    }


def test_the_sampler_logs_what_moved_and_a_last_sample_when_cancelled(tmp_path: Path) -> None:
    gate = Gate("pulse", Limits(requests=Rate(10, 1.0), in_flight=4), pool_size=4)
    quiet = Gate("skop", Limits(), pool_size=4)

    async def main() -> None:
        with BatchLog(tmp_path / "log.jsonl", batch_id="b") as log:
            sampler = LoadSampler(log, {"pulse": gate, "skop": quiet}, every=0.01)
            async with anyio.create_task_group() as tg:
                tg.start_soon(sampler)
                await anyio.sleep(0.05)  # several samples: nothing moved since the first
                gate.sent, gate.throttles, gate.jobs_in_flight = 7, 1, 3
                await anyio.sleep(0.05)
                gate.sent = 9
                tg.cancel_scope.cancel()  # the run ended: one last sample

    anyio.run(main)
    samples = [
        (e["provider"], e["sent"], e["throttled"], e["in_flight"], e["cap"], e["paced"])
        for e in _lines(tmp_path / "log.jsonl")
    ]
    assert samples == [
        ("pulse", 0, 0, 0, 4, 9.5),
        ("skop", 0, 0, 0, None, None),
        ("pulse", 7, 1, 3, 4, 9.5),
        ("pulse", 9, 1, 3, 4, 9.5),
    ]
