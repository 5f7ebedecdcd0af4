"""A network outage is the provider's state, not its jobs' (over real sockets).

A TCP proxy between the runner and the sandbox resets, then refuses, every connection for
longer than per-job error counting would tolerate: the jobs wait and all succeed, each
submitted once. A base URL nothing listens on stops its provider within seconds with one
line, and its jobs stay planned for `runner resume`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import socket
import sqlite3
import time
from pathlib import Path

import anyio
import httpx
import pytest

from runner.batch.run import resume_batch, run_batch
from runner.engine.engine import Engine
from runner.http.backoff import RetryPolicy
from runner.http.client import ProviderClient, make_transport
from runner.http.limits import Gate, OutagePolicy
from runner.lifecycle import State
from runner.plan import JobSpec, Limits, Plan, PollPolicy, ProviderSettings, Rate, Secret
from runner.providers.pulse import ADAPTER as PULSE
from runner.sandbox.server import RunningSandbox
from runner.store.results import BatchDir
from tests.e2e.helpers import manifest, pulse_jobs, spidra_jobs
from tests.e2e.tcp_proxy import proxy_to

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

POLL = PollPolicy(0.05, 0.2, 1.5)
# Small per-request retries, so the cut (3 s) is several times longer than counting 5 failed
# polls per job against it took to fail them all (0.6-1.1 s measured with this policy).
RETRY = RetryPolicy(attempts=3, base=0.01, cap=0.05)
RESET_FOR = 1.5
REFUSE_FOR = 1.5
JOBS = 20


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pulse_plan(root: Path, base_url: str) -> Plan:
    key = Secret("pulse-e2e")
    settings = ProviderSettings(
        name="pulse",
        base_url=base_url,
        api_key=key,
        api_key_var="PULSE_API_KEY",
        limits=Limits(requests=Rate(400, 1.0), in_flight=JOBS),
        poll=POLL,
        timeout=60.0,
    )
    jobs = tuple(
        JobSpec(
            f"p-{i}",
            "pulse",
            "extract",
            {"file_url": f"https://files.example/doc{i}.pdf"},
            poll=POLL,
            timeout=60.0,
            index=i,
        )
        for i in range(JOBS)
    )
    raw = b"# outage e2e\n"
    return Plan(
        "outage",
        root / "manifest.yaml",
        raw,
        hashlib.sha256(raw).hexdigest(),
        {"pulse": settings},
        jobs,
        secrets=(key,),
    )


SLOW_PULSE = {"providers": {"pulse": {"duration": {"min": 2.0, "max": 2.5}}}}


@pytest.mark.sandbox(scenario=SLOW_PULSE)
async def test_jobs_in_flight_outlive_an_outage_longer_than_the_old_give_up_time(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    with proxy_to(sandbox.origin) as proxy:
        plan = pulse_plan(tmp_path, proxy.origin)
        batch = BatchDir.create(tmp_path, plan)
        gate = Gate(
            "pulse",
            plan.providers["pulse"].limits,
            pool_size=8,
            outage=OutagePolicy(base=0.1, cap=0.4),
        )
        client = ProviderClient(
            provider="pulse",
            base_url=proxy.origin,
            api_key=plan.providers["pulse"].api_key,
            adapter=PULSE,
            gate=gate,
            transport=make_transport(8),
            retry=RETRY,
        )
        notices: list[tuple[str, str]] = []
        engine = Engine(
            plan,
            clients={"pulse": client},
            adapters={"pulse": PULSE},
            output=batch,
            retry=RETRY,
            notify=lambda event, fields: notices.append((event, fields["message"])),
        )
        cut: dict[str, float] = {}

        async def cut_the_network() -> None:
            while engine.counts[State.PLANNED] or engine.counts[State.SUBMITTING]:
                await anyio.sleep(0.01)
            cut["start"] = time.monotonic()
            proxy.reset()
            await anyio.sleep(RESET_FOR)
            proxy.refuse()
            await anyio.sleep(REFUSE_FOR)
            cut["in_flight_at_end"] = sum(
                engine.counts[s] for s in (State.QUEUED, State.RUNNING, State.FETCHING)
            )
            proxy.forward()
            cut["end"] = time.monotonic()

        started = time.monotonic()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(cut_the_network)
                result = await engine.run()
        finally:
            await client.transport.aclose()
        took = time.monotonic() - started

    books = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]["pulse"]
    assert cut["end"] - cut["start"] >= RESET_FOR + REFUSE_FOR
    assert result.counts == {State.SUCCEEDED: JOBS}, (result.counts, engine.records["p-0"].error)
    assert len(books["submits"]) == JOBS
    assert set(books["submits"].values()) == {1}  # each submitted exactly once
    assert took < 15, took
    assert [event for event, _ in notices] == ["provider.unreachable", "provider.reachable"], (
        notices
    )
    assert re.fullmatch(
        r"pulse unreachable since \d\d:\d\d:\d\dZ \((connection reset|connection closed|"
        r"connection refused)\); next try in [0-9.]+m?s",
        notices[0][1],
    ), notices[0][1]
    assert re.fullmatch(r"pulse reachable again after [0-9.]+s", notices[1][1]), notices[1][1]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def journal_states(batch: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(batch / "journal.sqlite")) as db:
        return dict(db.execute("SELECT job_id, state FROM jobs").fetchall())


def test_a_base_url_nothing_listens_on_stops_its_provider_in_seconds_with_one_line(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    providers = {
        "spidra": {
            "api_key": "${SPIDRA_API_KEY}",
            "base_url": sandbox.base_urls["spidra"],
            "limits": {"requests": {"rate": 50, "per": "1s"}},
        },
        "pulse": {"api_key": "${PULSE_API_KEY}", "base_url": f"http://{dead}"},
    }
    path = manifest(tmp_path, [spidra_jobs(3), pulse_jobs(5)], providers=providers)
    env = {"SPIDRA_API_KEY": "spd_test", "PULSE_API_KEY": "pulse_test"}
    stderr = io.StringIO()
    started = time.monotonic()
    code = run_batch(path, out=tmp_path / "results", env=env, stderr=stderr)
    took = time.monotonic() - started

    assert code == 1
    assert took < 20, took  # "within seconds": it took 61 s before; ~2 s now
    lines = [line for line in stderr.getvalue().splitlines() if dead in line]
    assert lines == [
        f"runner: Pulse: no answer from {dead} (connection refused) in 3 tries; stopped all "
        f"pulse jobs, 5 left for runner resume; check providers.pulse.base_url in {path}"
    ], stderr.getvalue()
    (batch,) = [p for p in (tmp_path / "results").glob("*/*") if p.name != "latest"]
    states = journal_states(batch)
    assert {states[f"p-{i}"] for i in range(1, 6)} == {"planned"}
    assert {states[f"s-{i}"] for i in range(1, 4)} == {"succeeded"}  # the others went on
    books = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]
    assert books["pulse"]["submits"] == {}

    # The endpoint fixed (here: the sandbox), resume submits and finishes them, once each.
    stderr = io.StringIO()
    code = resume_batch(batch, sandbox=sandbox.origin, env=env, stderr=stderr)
    assert code == 0, stderr.getvalue()
    assert set(journal_states(batch).values()) == {"succeeded"}
    books = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]
    assert len(books["pulse"]["submits"]) == 5
    assert set(books["pulse"]["submits"].values()) == {1}
