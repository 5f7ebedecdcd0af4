"""`--rate-store`: where the URL comes from, what batch.json keeps of it, and how the shared
budget (runner/http/shared_budget.py) is wired beside the engine of one batch."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import anyio

from runner.engine.engine import Engine
from runner.errors import UsageError
from runner.http.client import ProviderClient
from runner.http.shared_budget import ENV_STORE, SharedBudget, StoreConfig, parse_store

INFO_KEY = "rate_store"  # batch.json: the URL as shown (a password as ***), or absent


def add_options(parser: argparse.ArgumentParser, *, shards: bool) -> None:
    """`--shard K/N` (and, for run, `--shards N`) and `--rate-store URL`."""
    parser.add_argument(
        "--shard",
        metavar="K/N",
        default=None,
        help="run only shard K of N (counted from 1): the jobs whose sha256(id) mod N is "
        "K-1; also RUNNER_SHARD=K/N"
        + ("" if shards else "; resume refuses a batch of another shard"),
    )
    if shards:
        parser.add_argument(
            "--shards",
            metavar="N",
            default=None,
            help="N shards, this one from JOB_COMPLETION_INDEX (Kubernetes Indexed Job, "
            "counted from 0)",
        )
    parser.add_argument(
        "--rate-store",
        metavar="URL",
        default=None,
        help="share every rate budget and in-flight cap with other runner processes through "
        "Redis (redis://HOST:PORT/DB; also RUNNER_RATE_STORE); needs runner[redis]",
    )


def from_options(
    flag: str | None, env: Mapping[str, str], recorded: Mapping[str, Any] | None = None
) -> StoreConfig | None:
    """The store to use: `--rate-store`, else RUNNER_RATE_STORE, else (resume) the one the
    batch ran with when its URL holds no password. A batch that shared its budget never
    continues without it."""
    if flag is not None:
        return parse_store(flag)
    if ENV_STORE in env:
        return parse_store(env[ENV_STORE], ENV_STORE)
    shown = (recorded or {}).get(INFO_KEY)
    if not isinstance(shown, str):
        return None
    if ":***@" in shown:
        raise UsageError(
            f"this batch shared its rate budget through {shown}; give its URL again with "
            f"{ENV_STORE} (or resume --rate-store): the password is never stored"
        )
    return parse_store(shown, f"batch.json {INFO_KEY}")


def record(config: StoreConfig | None) -> dict[str, Any]:
    return {} if config is None else {INFO_KEY: config.shown}


def attach(clients: Mapping[str, ProviderClient], config: StoreConfig) -> SharedBudget:
    """One SharedBudget for the process; every provider's Gate delegates to it."""
    budget = SharedBudget(config, on_lost=lambda message: None)
    for client in clients.values():
        budget.attach(client.gate)
    return budget


Watch = Callable[[Engine], Coroutine[Any, Any, Any]]


def watching(budget: SharedBudget, inner: Watch, lost: Callable[[str], None]) -> Watch:
    """The engine's `watch`: `inner` (the signal watcher) and the budget's keeper side by
    side. A lost store is told to `lost` and interrupts the engine: nothing more is
    submitted, work under way gets the interrupt's grace, and the exit is resumable."""

    async def watch(engine: Engine) -> None:
        def on_lost(message: str) -> None:
            lost(message)
            engine.interrupt(message)

        budget.on_lost = on_lost

        def waiting(name: str) -> Callable[[], int]:
            lane = engine.lanes[name]
            return lambda: (
                min(len(lane.pending) + len(lane.deferred), lane.gate.pool_size)
                if lane.may_submit()
                else 0
            )

        def wake(name: str) -> None:
            lane = engine.lanes[name]
            lane.due_sooner(lane.gate.clock.now())

        waits = {name: waiting(name) for name in budget.shares if name in engine.lanes}
        async with anyio.create_task_group() as tg:
            tg.start_soon(inner, engine)
            await budget.keep(waits, wake)

    return watch
