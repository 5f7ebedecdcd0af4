"""The benchmark report's pieces that must be right for its numbers to mean anything: the
manifests and sandbox scenarios it writes (scaled consistently), and the baseline client
finishing a batch against a real sandbox with a hidden cap."""

from __future__ import annotations

from pathlib import Path

import anyio
import yaml

from runner.manifest.loader import load_manifest
from runner.plan import Limits, Rate
from runner.sandbox.scenario import RateLimit, Scenario, speed_up
from tests.bench import scenarios as sc
from tests.bench.baselines import Client, run_sdk, run_serial
from tests.bench.bench_report import manifest_for, sandbox_scenario, shard_lines
from tests.conftest import MakeSandbox
from tests.e2e.helpers import sandbox_books


def _spec(scale: float = 1.0) -> sc.Spec:
    limits = Limits(requests=Rate(20, 1.0), in_flight=3)
    return sc.Spec("T1", "test", (sc.Share("pulse", 6, (0.2, 0.4), limits, limits),), scale=scale)


def test_a_scaled_manifest_declares_rates_times_and_polls_divided_by_the_scale(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest_for(_spec(), 10.0)))
    plan = load_manifest(path, env={}, sandbox_keys=True).plan
    limits = plan.providers["pulse"].limits
    assert limits.requests is not None
    assert limits.requests.per_second == 200  # 20/s, ten times faster
    assert limits.in_flight == 3  # a count: never scaled
    assert len(plan.jobs) == 6
    assert plan.jobs[0].poll.initial == 0.2  # Pulse's default 2 s, ten times faster


def test_the_sandbox_scenario_enforces_the_real_limits_hidden(tmp_path: Path) -> None:
    scenario = Scenario.from_dict(sandbox_scenario(_spec()))
    knobs = speed_up(scenario, 10).knobs("pulse")
    assert knobs.rate_limit == RateLimit(20, 0.1)
    assert knobs.hidden_in_flight == 3
    for spec in sc.specs():  # every scenario's files are valid as written
        Scenario.from_dict(sandbox_scenario(spec))
        path = tmp_path / f"{spec.key}.yaml"
        path.write_text(yaml.safe_dump(manifest_for(spec, spec.scale)))
        assert len(load_manifest(path, env={}, sandbox_keys=True).plan.jobs) == spec.jobs


def test_the_baselines_finish_a_batch_through_a_hidden_cap(
    make_sandbox: MakeSandbox, tmp_path: Path
) -> None:
    spec = _spec()
    data = sandbox_scenario(spec)
    data["time_scale"] = 10
    sandbox = make_sandbox(scenario=data)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest_for(spec, 1.0)))
    plan = load_manifest(path, env={}, sandbox_keys=True).plan

    async def go(mode: str) -> tuple[Client, dict[str, object]]:
        client = Client(plan, sandbox.origin, tmp_path / mode, scale=10.0, pool=8)
        try:
            found = await (run_sdk if mode == "sdk" else run_serial)(client, 60.0)
        finally:
            await client.close()
        return client, found

    sdk, found = anyio.run(go, "sdk")
    assert found["complete"] is True
    assert (sdk.tally.succeeded, sdk.tally.failed) == (6, 0)
    books = sandbox_books(sandbox, "pulse")
    assert books["busy"] == sdk.tally.throttled_seen > 0  # 6 at once over a cap of 3
    assert len(list((tmp_path / "sdk").iterdir())) == 6  # each job's results written
    serial, found = anyio.run(go, "serial")
    assert (found["complete"], serial.tally.succeeded) == (True, 6)
    assert sandbox_books(sandbox, "pulse")["busy"] == books["busy"]  # one at a time: none


def test_the_report_has_a_row_per_shard_run_and_none_without_the_file() -> None:
    run = {"shards": 2, "shared_store": True, "makespan_s": 14.1, "batch_span_s": 9.8}
    shards = {
        "what": "makespan of N shard processes",
        "rate_bound": {"jobs": 40, "runs": [{**run, "throttled_429": 0, "submit_posts": 40}]},
        "in_flight_bound": {
            "jobs": 24,
            "runs": [{**run, "shared_store": False, "throttled_429": 0, "submit_posts": 48}],
        },
    }
    lines = shard_lines(shards)
    assert "| rate-bound | 2 | redis | 14.1 | 9.8 | 0 | 40 / 40 |" in lines
    assert "| in-flight-bound | 2 | none | 14.1 | 9.8 | 0 | 48 / 24 |" in lines
    assert shard_lines(None) == []
