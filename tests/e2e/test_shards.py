"""Past one machine, on this one: shards merged equal an unsharded run; four shard processes
share one rate budget and one in-flight cap through a real redis-server, so the sandbox's
books show no window over the limit, no 429 and every job submitted once, also when a shard is
SIGKILLed and resumed; a lost Redis stops the shards with exit 5 and a clean resume."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from runner.batch.merge import merge_batches
from runner.batch.run import resume_batch, run_batch
from runner.batch.shard import Shard
from runner.cli import main
from runner.errors import UsageError
from runner.exits import ExitCode
from runner.sandbox.app import create_app
from runner.sandbox.scenario import Scenario
from runner.sandbox.server import serve_in_thread
from runner.store.results import SUMS, check, render_sums
from tests.e2e import shard_procs as procs
from tests.e2e.test_durable_repro import ENV, SCENARIO, differences, free_port, write_manifest
from tests.redis_server import RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture

pytestmark = pytest.mark.e2e

RATE = 40  # declared and enforced: requests per second to Bulkgrid
RATE_SCENARIO = {
    "defaults": {"duration": {"min": 0.1, "max": 0.6}},
    "providers": {"bulkgrid": {"rate_limit": {"requests": RATE, "per": "1s"}}},
}

# Jobs long enough that neither shard can end before the store is stopped, however long a
# busy machine takes to start the second one (seen: 7 s for four processes to start).
LONG_RATE_SCENARIO = {**RATE_SCENARIO, "defaults": {"duration": {"min": 10, "max": 12}}}


def _within_the_limit_once_each(books: dict[str, Any], jobs: int) -> None:
    entry = books["bulkgrid"]
    assert entry["throttled"] == 0, entry["throttled"]
    assert entry["max_window_requests"] <= RATE, entry["max_window_requests"]
    assert len(entry["submits"]) == jobs, entry["submits"]
    assert set(entry["submits"].values()) == {1}, entry["submits"]


def _states(batch: Path) -> set[str]:
    import json

    return {
        json.loads((job / "job.json").read_text())["state"] for job in (batch / "jobs").iterdir()
    }


def run_shards(
    manifest: Path, out: Path, origin: str, count: int, only: tuple[int, ...] = ()
) -> None:
    """Shards K/count of `manifest` one after the other, in this process; each must exit 0."""
    for k in only or range(1, count + 1):
        code = run_batch(
            manifest, out=out, sandbox=origin, env=ENV, quiet=True, shard=Shard(k, count)
        )
        assert code == 0


# -- merge ------------------------------------------------------------------------------------


def test_merged_shards_equal_an_unsharded_run_on_the_same_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path)  # spidra, pulse (large results in files/), lobstr
    port = free_port()

    def sandbox() -> Any:
        return serve_in_thread(
            create_app(seed=11, scenario=Scenario.from_dict(SCENARIO)), port=port
        )

    with sandbox() as running:
        run_shards(manifest, tmp_path / "shards", running.origin, 3)
    with sandbox() as running:
        code = run_batch(
            manifest, out=tmp_path / "whole", sandbox=running.origin, env=ENV, quiet=True
        )
        assert code == 0
    whole = (tmp_path / "whole" / "repro" / "latest").resolve()
    parts = [procs.shard_dir(tmp_path / "shards", "repro", k, 3) for k in (1, 2, 3)]
    assert all(part is not None for part in parts)
    dirs = [p for p in parts if p is not None]
    # each shard holds only its own jobs; together all six
    assert sum(len(list((d / "jobs").iterdir())) for d in dirs) == 6

    merged = merge_batches(list(reversed(dirs)), tmp_path / "merged")
    assert merged.exit_code == 0
    assert merged.jobs == 6
    assert differences(merged.path / "jobs", whole / "jobs") == []
    assert (merged.path / SUMS).read_bytes() == (whole / SUMS).read_bytes()
    assert check(merged.path) == (check(whole)[0], [])
    assert main(["verify", str(merged.path)]) == 0
    # status and report have no journal to read there: they name the shards, which have one
    for command in ("status", "report"):
        assert main([command, str(merged.path)]) == 2
        line = capsys.readouterr().err
        assert "is a merged batch (runner merge)" in line, line
        assert all(str(d) in line for d in dirs), line

    # refusals: one line, exit 2, nothing written
    with pytest.raises(UsageError, match=r"shard 2/3 missing: give every shard's batch directory"):
        merge_batches([dirs[0], dirs[2]], tmp_path / "nope")
    with pytest.raises(UsageError, match=r"shard 1/3 is given twice"):
        merge_batches([dirs[0], dirs[0], dirs[1], dirs[2]], tmp_path / "nope")
    with pytest.raises(UsageError, match=r"is not a shard's batch"):
        merge_batches([whole, *dirs], tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
    # a shard resumes only as itself
    with pytest.raises(UsageError, match=r"is shard 1/3; it cannot be resumed as shard 2/3"):
        resume_batch(dirs[0], env=ENV, shard=Shard(2, 3))


def test_merge_refuses_shards_of_another_manifest_and_overlapping_jobs(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path)
    with serve_in_thread(create_app(seed=11, scenario=Scenario.from_dict(SCENARIO))) as running:
        run_shards(manifest, tmp_path / "a", running.origin, 2)
        manifest.write_text(manifest.read_text().replace("plans", "prices"))
        run_shards(manifest, tmp_path / "b", running.origin, 2, only=(2,))
    one = procs.shard_dir(tmp_path / "a", "repro", 1, 2)
    two = procs.shard_dir(tmp_path / "a", "repro", 2, 2)
    foreign = procs.shard_dir(tmp_path / "b", "repro", 2, 2)
    assert one is not None
    assert two is not None
    assert foreign is not None
    with pytest.raises(UsageError, match="ran different manifest: they are not shards of one"):
        merge_batches([one, foreign], tmp_path / "m")
    # a job of shard 1 copied into shard 2: the shards overlap
    moved = next((one / "jobs").iterdir())
    import shutil

    shutil.copytree(moved, two / "jobs" / moved.name)
    with pytest.raises(UsageError, match="does not verify"):
        merge_batches([one, two], tmp_path / "m")
    # ... even with its SHA256SUMS made to agree
    (two / SUMS).write_bytes(render_sums(two))
    with pytest.raises(UsageError, match=f"job '{moved.name}' is in both .*: the shards overlap"):
        merge_batches([two, one], tmp_path / "m")
    shutil.rmtree(moved)  # now it is only where it does not belong
    (one / SUMS).write_bytes(render_sums(one))
    with pytest.raises(UsageError, match=f"job '{moved.name}' in .* does not belong to shard 2/2"):
        merge_batches([one, two], tmp_path / "m")
    shutil.rmtree(two / "jobs" / moved.name)  # a job no shard finished (an interrupted shard)
    (two / SUMS).write_bytes(render_sums(two))
    with pytest.raises(
        UsageError,
        match=f"1 job of the manifest has no results, first '{moved.name}' \\(shard 1/2\\): "
        "finish it with: runner resume ",
    ):
        merge_batches([one, two], tmp_path / "m")
    assert not (tmp_path / "m").exists()


# -- one budget across processes ----------------------------------------------------------------


def test_four_shards_share_one_rate_budget_through_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    jobs = 24
    manifest = procs.rate_manifest(tmp_path, jobs, RATE)
    with procs.sandbox_process(tmp_path, RATE_SCENARIO) as origin:
        results = procs.finish(
            procs.start_shards(manifest, origin, tmp_path / "out", 4, redis_server.url)
        )
        books = procs.books(origin)
    assert {k: code for k, (code, _) in results.items()} == {1: 0, 2: 0, 3: 0, 4: 0}, results
    _within_the_limit_once_each(books, jobs)
    dirs = [procs.shard_dir(tmp_path / "out", "shards", k, 4) for k in (1, 2, 3, 4)]
    assert all(d is not None and _states(d) == {"succeeded"} for d in dirs)


def test_without_the_store_four_shards_go_over_the_limit(tmp_path: Path) -> None:
    """The control: the same four shards, each with its own limits, are throttled (so the
    test above would fail if the budget were not shared)."""
    manifest = procs.rate_manifest(tmp_path, 24, RATE)
    with procs.sandbox_process(tmp_path, RATE_SCENARIO) as origin:
        procs.finish(procs.start_shards(manifest, origin, tmp_path / "out", 4, None))
        entry = procs.books(origin)["bulkgrid"]
    assert entry["throttled"] > 0


def test_a_sigkilled_shard_resumed_keeps_the_books_clean(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    jobs = 24
    manifest = procs.rate_manifest(tmp_path, jobs, RATE)
    out = tmp_path / "out"
    with procs.sandbox_process(tmp_path, RATE_SCENARIO) as origin:
        running = procs.start_shards(manifest, origin, out, 4, redis_server.url)
        victim = procs.wait_for_shard(out, "shards", 2, 4)
        procs.wait_for_log(victim / "log.jsonl", '"job.submitted"', 2)
        running[2].send_signal(signal.SIGKILL)
        assert running[2].wait(timeout=10) == -signal.SIGKILL
        resumed = procs.finish({2: procs.resume(victim)})[2]
        others = procs.finish({k: p for k, p in running.items() if k != 2})
        books = procs.books(origin)
    assert resumed[0] == 0, resumed[1]
    assert {k: code for k, (code, _) in others.items()} == {1: 0, 3: 0, 4: 0}, others
    _within_the_limit_once_each(books, jobs)
    assert _states(victim) == {"succeeded"}
    dirs = [procs.shard_dir(out, "shards", k, 4) for k in (1, 2, 3, 4)]
    merged = merge_batches([d for d in dirs if d is not None], tmp_path / "merged")
    assert merged.exit_code == 0
    assert check(merged.path)[1] == []


def test_a_lost_redis_stops_the_shards_with_exit_5_and_they_resume_cleanly(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    jobs = 24
    manifest = procs.rate_manifest(tmp_path, jobs, RATE)
    out = tmp_path / "out"
    with procs.sandbox_process(tmp_path, LONG_RATE_SCENARIO) as origin:
        running = procs.start_shards(manifest, origin, out, 2, redis_server.url)
        for k in (1, 2):  # both under way (a shard not started yet would find no store: exit 2)
            started = procs.wait_for_shard(out, "shards", k, 2)
            procs.wait_for_log(started / "log.jsonl", '"job.submitted"', 2)
        redis_server.stop()
        stopped = procs.finish(running)
        for code, err in stopped.values():
            assert code == ExitCode.RATE_STORE_LOST, err
            assert f"runner: lost the rate store {redis_server.url} (" in err
            assert "interrupted by the loss of the rate store; state saved" in err
            assert "Continue with: runner resume " in err
        redis_server.start()  # the same URL again
        dirs = [procs.wait_for_shard(out, "shards", k, 2) for k in (1, 2)]
        resumed = procs.finish({k: procs.resume(d) for k, d in enumerate(dirs, start=1)})
        assert {k: code for k, (code, _) in resumed.items()} == {1: 0, 2: 0}, resumed
        assert all(_states(d) == {"succeeded"} for d in dirs)
        books = procs.books(origin)
    _within_the_limit_once_each(books, jobs)


def test_four_shards_share_one_in_flight_cap_through_leases(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    jobs, cap = 16, 3
    manifest = procs.in_flight_manifest(tmp_path, jobs, cap)
    scenario = {
        "defaults": {"duration": {"min": 0.2, "max": 0.5}},
        "providers": {"skop": {"max_active": cap}},
    }
    with procs.sandbox_process(tmp_path, scenario) as origin:
        results = procs.finish(
            procs.start_shards(manifest, origin, tmp_path / "out", 4, redis_server.url)
        )
        entry = procs.books(origin)["skop"]
    assert {k: code for k, (code, _) in results.items()} == {1: 0, 2: 0, 3: 0, 4: 0}, results
    posts = sum(n for route, n in entry["requests"].items() if route.startswith("POST"))
    assert posts == jobs, entry["requests"]  # no 429 concurrency_limit_exceeded was ever sent
    assert set(entry["submits"].values()) == {1}
    assert len(entry["submits"]) == jobs


def test_without_leases_four_shards_go_over_the_in_flight_cap(tmp_path: Path) -> None:
    jobs, cap = 16, 3
    manifest = procs.in_flight_manifest(tmp_path, jobs, cap)
    scenario = {
        "defaults": {"duration": {"min": 0.2, "max": 0.5}},
        "providers": {"skop": {"max_active": cap}},
    }
    with procs.sandbox_process(tmp_path, scenario) as origin:
        procs.finish(procs.start_shards(manifest, origin, tmp_path / "out", 4, None))
        entry = procs.books(origin)["skop"]
    posts = sum(n for route, n in entry["requests"].items() if route.startswith("POST"))
    assert posts > jobs  # refused submits (429) were sent again


def test_a_shard_that_owns_no_job_finishes_at_once_and_merges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    manifest = tmp_path / "one.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "name": "one",
                "defaults": {"poll": {"initial": "50ms", "max": "200ms"}},
                "providers": {"pulse": {"api_key": "${PULSE_API_KEY}"}},
                "jobs": [
                    {
                        "id": "only-job",
                        "provider": "pulse",
                        "type": "extract",
                        "params": {"file_url": "https://files.example/a.pdf"},
                    }
                ],
            }
        )
    )
    with serve_in_thread(create_app(seed=3)) as running:
        run_shards(manifest, tmp_path / "out", running.origin, 3)
    dirs = [procs.shard_dir(tmp_path / "out", "one", k, 3) for k in (1, 2, 3)]
    sizes = [len(list((d / "jobs").iterdir())) for d in dirs if d is not None]
    (owning,) = [k for k in (1, 2, 3) if Shard(k, 3).owns("only-job")]
    assert sizes == [1 if k == owning else 0 for k in (1, 2, 3)]
    capsys.readouterr()
    args = [str(d) for d in dirs if d is not None]
    assert main(["merge", *args, "--out", str(tmp_path / "merged")]) == 0
    assert "merged 3 shards, 1 job (1 succeeded) into " in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "merged" / "one" / "latest")]) == 0
    # the CLI's refusal: one line, exit 2
    assert main(["merge", *args[:2], "--out", str(tmp_path / "merged2")]) == 2
    assert capsys.readouterr().err.strip() == (
        "runner: shard 3/3 missing: give every shard's batch directory"
    )


def test_a_lost_store_sends_no_cancel_even_with_on_interrupt_cancel(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Cancels cannot be paced without the store either: they are not sent, the jobs keep
    their state for `runner resume`, and the shard still ends (exit 5) in bounded time."""
    manifest = procs.rate_manifest(tmp_path, 16, RATE, on_interrupt="cancel")
    out = tmp_path / "out"
    with procs.sandbox_process(tmp_path, RATE_SCENARIO) as origin:
        running = procs.start_shards(manifest, origin, out, 1, redis_server.url)
        batch = procs.wait_for_shard(out, "shards", 1, 1)
        procs.wait_for_log(batch / "log.jsonl", '"job.submitted"', 3)
        redis_server.stop()
        ((code, err),) = procs.finish(running, timeout=60).values()
        requests = procs.books(origin)["bulkgrid"]["requests"]
    assert code == ExitCode.RATE_STORE_LOST, err
    assert not [route for route in requests if route.endswith("/cancel")], requests
    lost = f"the remote cancel failed: the rate store {redis_server.url} is lost: not sent"
    assert lost in err  # said once per job still running remotely, which resume follows
    assert "interrupted by the loss of the rate store; state saved" in err
