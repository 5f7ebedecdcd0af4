"""The shared budget against a real redis-server: GCRA reservations on the server clock shared
by two "processes" (two SharedBudgets, two connections), a 429 pause seen by the other, leases
capped across both, freed by a TTL when their holder dies, and a lost store told once and
never papered over."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from runner.errors import StoreLostError, UsageError
from runner.http import shared_budget
from runner.http.limits import Gate
from runner.http.shared_budget import SharedBudget, StoreConfig, parse_store
from runner.plan import Limits, Rate
from tests.redis_server import RedisServer, free_port, redis_server

__all__ = ["redis_server"]  # the fixture


def test_a_store_url_parses_and_keeps_runner_options_out_of_the_redis_url() -> None:
    config = parse_store("redis://127.0.0.1:6379/2?lease_ttl=4&prefix=nightly")
    assert config == StoreConfig("redis://127.0.0.1:6379/2", 4.0, "nightly")
    assert parse_store("unix:///run/redis.sock?db=1").url == "unix:///run/redis.sock?db=1"
    secret = parse_store("redis://:hunter22@cache.internal:6380/0")
    assert secret.shown == "redis://:***@cache.internal:6380/0"
    assert "hunter22" not in secret.shown


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:6379", "is not a Redis URL"),
        ("127.0.0.1:6379", "is not a Redis URL"),
        ("", "is not a Redis URL"),
        ("redis://h:1/0?lease_ttl=0", "lease_ttl='0': give seconds from 1 to 3600"),
        ("redis://h:1/0?lease_ttl=soon", "lease_ttl='soon'"),
    ],
)
def test_a_bad_store_url_is_a_usage_error(url: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_store(url, "RUNNER_RATE_STORE")


def test_a_store_that_does_not_answer_is_refused_before_anything_starts() -> None:
    pytest.importorskip("redis")
    config = parse_store(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(UsageError, match=r"no answer .*start Redis there or fix the URL"):
        shared_budget.check_store(config)


def _gate(limits: Limits) -> Gate:
    return Gate("spidra", limits, pool_size=4)


def _budget(server: RedisServer, gate: Gate, *, ttl: str = "", **kw: Any) -> SharedBudget:
    url = server.url + (f"?lease_ttl={ttl}" if ttl else "")
    budget = SharedBudget(parse_store(url), **({"on_lost": lambda m: None} | kw))
    budget.attach(gate)
    return budget


def _run(body: Callable[[], Awaitable[None]]) -> None:
    anyio.run(body)


def test_two_processes_reserve_from_one_gcra_budget(redis_server: RedisServer) -> None:
    limits = Limits(requests=Rate(1, 1.0 / 0.95))  # paced at 0.95 x declared = 1 per second
    one, two = _gate(limits), _gate(limits)
    a, b = _budget(redis_server, one), _budget(redis_server, two)

    async def body() -> None:
        delays = []
        for budget in (a, b, a, b, a):
            share = budget.shares["spidra"]
            delays.append(
                float(
                    await budget.call(
                        "reserve", [share.budget_key + "requests", share.pause_key], [1.0, 1]
                    )
                )
            )
        await a.close()
        await b.close()
        # one slot per second whoever asks: 0, 1, 2, 3, 4 s (less the time the calls took)
        for k, delay in enumerate(delays):
            assert k - 0.2 < delay <= k, delays

    _run(body)


def test_a_pause_reaches_the_other_process(redis_server: RedisServer) -> None:
    limits = Limits(requests=Rate(100, 1))
    one, two = _gate(limits), _gate(limits)
    a, b = _budget(redis_server, one), _budget(redis_server, two)

    async def body() -> None:
        one.pause(30.0, "HTTP 429")  # the Gate tells its share; the next call sends it
        await a.shares["spidra"].flush_pause()
        share = b.shares["spidra"]
        delay = float(
            await b.call("reserve", [share.budget_key + "requests", share.pause_key], [0.01, 1])
        )
        assert 29.0 < delay <= 30.0
        await a.close()
        await b.close()

    _run(body)


def test_the_in_flight_cap_is_one_set_of_leases_across_processes(
    redis_server: RedisServer,
) -> None:
    limits = Limits(requests=Rate(100, 1), in_flight=2)
    one, two = _gate(limits), _gate(limits)
    a, b = _budget(redis_server, one), _budget(redis_server, two)

    async def body() -> None:
        assert not one.can_submit()  # no lease yet: no submit
        assert await a.shares["spidra"].keep(waiting=3) is True
        assert len(a.shares["spidra"].leases) == 2  # the cap, not the 3 asked
        assert one.can_submit()
        assert await b.shares["spidra"].keep(waiting=1) is False
        assert not two.can_submit()
        one.jobs_in_flight = 2  # both used
        assert not one.can_submit()
        one.jobs_in_flight = 0  # both finished, nothing waiting: given back
        await a.shares["spidra"].keep(waiting=0)
        assert a.shares["spidra"].leases == []
        b.shares["spidra"].denied_at = -1e9  # ask again now
        assert await b.shares["spidra"].keep(waiting=1) is True
        assert two.can_submit()
        await a.close()
        await b.close()

    _run(body)


def test_a_killed_holder_frees_its_leases_after_the_ttl_and_a_live_one_keeps_them(
    redis_server: RedisServer,
) -> None:
    limits = Limits(requests=Rate(100, 1), in_flight=1)
    one, two, three = _gate(limits), _gate(limits), _gate(limits)
    dead = _budget(redis_server, one, ttl="1")
    live = _budget(redis_server, two, ttl="1")
    other = _budget(redis_server, three, ttl="1")

    async def body() -> None:
        assert await dead.shares["spidra"].keep(waiting=1)
        # `dead` never renews nor gives back (SIGKILL): after the TTL the slot is free
        await anyio.sleep(1.2)
        assert await live.shares["spidra"].keep(waiting=1)
        two.jobs_in_flight = 1
        # `live` renews every tick while holding: the slot stays taken past several TTLs
        with anyio.move_on_after(2.5):
            while True:
                await live.shares["spidra"].keep(waiting=0)
                other.shares["spidra"].denied_at = -1e9
                assert not await other.shares["spidra"].keep(waiting=1)
                await anyio.sleep(0.1)
        for budget in (live, other):
            await budget.close()

    _run(body)


def test_a_lost_store_is_told_once_and_nothing_is_sent_through_it(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shared_budget, "LOST_WAIT", 0.0)
    told: list[str] = []
    gate = _gate(Limits(requests=Rate(100, 1)))
    budget = _budget(redis_server, gate, on_lost=told.append)

    async def body() -> None:
        await budget.shares["spidra"].acquire("status")  # answered: nothing told
        assert told == []
        redis_server.stop()
        for _ in range(2):
            with pytest.raises(StoreLostError, match="is lost: not sent"):
                async with gate.request("status"):
                    raise AssertionError("a request went out without the store")
        assert len(told) == 1
        assert told[0].startswith(f"lost the rate store {redis_server.url} (")
        assert "no new submits" in told[0]
        await budget.close()

    _run(body)


def test_resume_uses_the_recorded_store_unless_it_held_a_password() -> None:
    from runner.batch import rate_store

    assert rate_store.from_options(None, {}, None) is None
    assert rate_store.from_options(None, {}, {"rate_store": "redis://h:1/0"}) == StoreConfig(
        "redis://h:1/0"
    )
    given = rate_store.from_options("redis://g:2/1", {"RUNNER_RATE_STORE": "redis://e:3/0"})
    assert given is not None
    assert given.url == "redis://g:2/1"  # the flag first, then the environment
    from_env = rate_store.from_options(None, {"RUNNER_RATE_STORE": "redis://e:3/0"})
    assert from_env is not None
    assert from_env.url == "redis://e:3/0"
    with pytest.raises(UsageError, match=r"give its URL again with RUNNER_RATE_STORE"):
        rate_store.from_options(None, {}, {"rate_store": "redis://:***@h:1/0"})
    assert rate_store.record(parse_store("redis://:pw12345@h:1/0")) == {
        "rate_store": "redis://:***@h:1/0"
    }
