"""Request and wall-time estimates (docs/engineering.md#wall-time-estimate), and `runner plan`
output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.cli import main
from runner.estimate import estimate_plan, expected_polls, result_requests, submit_requests
from runner.plan import JobSpec, Limits, Plan, PollPolicy, ProviderSettings, Rate, Secret
from runner.providers import lobstr
from tests.providers.fakes import FakeHttp, router


def settings(name: str, limits: Limits) -> ProviderSettings:
    return ProviderSettings(
        name=name,
        base_url="http://127.0.0.1:1",
        api_key=Secret("k"),
        api_key_var=None,
        limits=limits,
        poll=PollPolicy(2.0, 60.0, 1.5),
        timeout=60.0,
    )


def plan_of(providers: dict[str, ProviderSettings], jobs: list[JobSpec]) -> Plan:
    return Plan("p", Path("p.yaml"), b"", "0" * 64, providers, tuple(jobs))


def test_expected_polls_follow_the_geometric_schedule() -> None:
    policy = PollPolicy(2.0, 10.0, 2.0)  # polls at 2, 6, 14, 24, 34, ...
    assert expected_polls(policy, 0.0) == 1
    assert expected_polls(policy, 2.0) == 1
    assert expected_polls(policy, 6.0) == 2
    assert expected_polls(policy, 7.0) == 3
    assert expected_polls(policy, 30.0) == 5


def test_request_counts_per_job_type() -> None:
    lobstr_new = JobSpec("a", "lobstr", "run", {"crawler": "c", "tasks": [{"url": "u"}]})
    lobstr_old = JobSpec(
        "b", "lobstr", "run", {"squid": "s"}, fetch={"results": True, "export": True}
    )
    # POST /squids, /tasks, /runs: no configure without squid settings
    assert submit_requests(lobstr_new) == 3
    configured = {"crawler": "c", "tasks": [{"url": "u"}], "params": {"max_results": 5}}
    assert submit_requests(JobSpec("e", "lobstr", "run", configured)) == 4
    # an existing squid reconfigured: POST /squids/{id}, then /runs
    assert submit_requests(JobSpec("f", "lobstr", "run", {"squid": "s", "concurrency": 2})) == 2
    assert submit_requests(lobstr_old) == 1
    assert result_requests(lobstr_old) == 3
    assert result_requests(JobSpec("c", "pulse", "extract", {})) == 0
    assert result_requests(JobSpec("d", "spidra", "crawl", {}, fetch={"pages": True})) == 1


SQUID = "e445405ef4ab41208ef7d29b92a1a9dd"
CRAWLER = "4734d096159ef05210e0e1677e8be823"
TASKS = [{"url": "https://a.example"}]


@pytest.mark.parametrize(
    "params",
    [
        {"squid": SQUID},
        {"squid": SQUID, "concurrency": 2},
        {"squid": SQUID, "tasks": TASKS},
        {"crawler": CRAWLER, "tasks": TASKS},
        {"crawler": CRAWLER, "tasks": TASKS, "params": {"max_results": 5}, "accounts": ["a"]},
    ],
)
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_lobstr_submit_requests_match_what_the_adapter_sends(
    params: dict[str, object], anyio_backend: str
) -> None:
    routes = {
        "POST /squids": {"id": SQUID},
        f"POST /squids/{SQUID}": {"id": SQUID},
        "POST /tasks": {"tasks": [{"id": "t1"}], "duplicated_count": 0},
        "POST /runs": {"id": "0393be3ea6f74986906153df1c3f9894", "status": "pending"},
    }
    http = FakeHttp(lobstr.ADAPTER, router(routes))
    spec = JobSpec("a", "lobstr", "run", params)
    await lobstr.LobstrAdapter().submit(http, spec)
    assert len(http.seen) == submit_requests(spec)


def test_lobstr_polls_of_a_running_run_also_read_stats() -> None:
    policy = PollPolicy(10.0, 60.0, 1.5)  # polls at 10, 25, 47.5, 81.25, ... for 300 s: 8
    jobs = [JobSpec(f"j{i}", "lobstr", "run", {"squid": "s"}, poll=policy) for i in range(3)]
    plan = plan_of({"lobstr": settings("lobstr", Limits(requests=Rate(10, 1.0)))}, jobs)
    (estimate,) = estimate_plan(plan).providers
    assert expected_polls(policy, 300.0) == 8
    assert (estimate.polls_min, estimate.polls_expected) == (3, 3 * (2 * 8 - 1))


def test_rate_bound_plan() -> None:
    # 100 pulse jobs at 10 requests/s: floor = (100 submits + 100 polls) / 10 = 20 s
    jobs = [
        JobSpec(f"j{i}", "pulse", "extract", {}, poll=PollPolicy(2.0, 60.0, 1.5))
        for i in range(100)
    ]
    plan = plan_of({"pulse": settings("pulse", Limits(requests=Rate(10, 1.0), in_flight=20))}, jobs)
    (pulse,) = estimate_plan(plan).providers
    assert (pulse.submits, pulse.polls_min, pulse.results) == (100, 100, 0)
    assert pulse.requests_min == 200
    assert pulse.floor_seconds == pytest.approx(20.0)
    # typical 60 s with in_flight 20: 100·60/20 = 300 s beats the rate bound
    assert pulse.expected_seconds == pytest.approx(300.0)
    assert pulse.bound == "in_flight"


def test_endpoint_splits_bound_each_class() -> None:
    limits = Limits(endpoints={"submit": Rate(1, 1.0), "status": Rate(100, 1.0)}, in_flight=None)
    jobs = [
        JobSpec(f"j{i}", "lobstr", "run", {"squid": "s"}, fetch={"results": False})
        for i in range(30)
    ]
    plan = plan_of({"lobstr": settings("lobstr", limits)}, jobs)
    (lobstr,) = estimate_plan(plan).providers
    assert lobstr.floor_seconds == pytest.approx(30.0)  # 30 submits at 1/s
    assert estimate_plan(plan).floor_seconds == pytest.approx(30.0)


def test_the_batch_takes_the_slowest_provider() -> None:
    plan = plan_of(
        {
            "pulse": settings("pulse", Limits(requests=Rate(1, 1.0))),
            "spidra": settings("spidra", Limits(requests=Rate(1, 10.0))),
        },
        [JobSpec("a", "pulse", "extract", {}), JobSpec("b", "spidra", "scrape", {})],
    )
    estimate = estimate_plan(plan)
    assert [p.floor_seconds for p in estimate.providers] == [2.0, 20.0]
    assert estimate.floor_seconds == 20.0
    # polls at 2, 5, 9.5, 16.3, 26.4, 41.6, 60.4 s: pulse (60 s) needs 7, spidra (30 s) 6
    assert estimate.as_dict()["batch"]["requests"] == {"min": 4, "expected": 2 + 7 + 6}


MANY = """\
version: 1
name: many
providers:
  pulse: {api_key: "${PULSE_API_KEY}"}
jobs:
  - id: "doc-{n}"
    provider: pulse
    type: extract
    tags: [nightly]
    each: {file: items.txt}
    params: {file_url: "{item}"}
"""


@pytest.fixture
def many(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PULSE_API_KEY", "pk-plan-secret")
    (tmp_path / "items.txt").write_text("".join(f"https://x.example/{i}\n" for i in range(25)))
    (tmp_path / "m.yaml").write_text(MANY)
    return tmp_path / "m.yaml"


def test_plan_lists_the_first_jobs_and_counts_the_rest(
    many: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", str(many)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == f"plan many ({many}): 25 jobs, 1 provider"
    assert lines[2] == "jobs (first 20 of 25; --all lists all)"
    assert lines[3].split() == ["#", "id", "provider", "type", "tags"]
    assert lines[4].split() == ["1", "doc-1", "pulse", "extract", "nightly"]
    assert "  ... and 5 more" in lines
    assert "pk-plan-secret" not in out + err
    assert err == ""


def test_plan_all_lists_every_job(many: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--all", str(many)]) == 0
    out, _ = capsys.readouterr()
    assert "doc-25" in out
    assert "more" not in out


def test_plan_json_is_canonical_and_complete(
    many: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    assert main(["plan", "--json", str(many)]) == 0
    out, _ = capsysbinary.readouterr()
    data = json.loads(out)
    assert out == (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()
    assert len(data["jobs"]) == 25
    assert data["jobs"][0] == {
        "id": "doc-1",
        "provider": "pulse",
        "type": "extract",
        "tags": ["nightly"],
    }
    pulse = data["providers"]["pulse"]
    assert pulse["limits"]["requests"] == {"rate": 10, "per_seconds": 1.0, "burst": 1}
    assert pulse["api_key_var"] == "PULSE_API_KEY"
    assert b"pk-plan-secret" not in out
    assert data["estimate"]["batch"]["requests"]["min"] == 50
