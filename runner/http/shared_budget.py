"""One rate budget for every process: GCRA reservations, shared pauses and in-flight leases in
Redis (`--rate-store redis://HOST:PORT/DB`).

Each budget of a provider (`requests`, and each endpoint class it declares) is one key holding
its theoretical arrival time. A request reserves a slot with one Lua script that reads the
server's clock (`TIME`), so no process's clock matters, and returns how long to wait
(docs/engineering.md#one-budget-across-processes). A 429's pause is one more key per provider
that every reservation honours, so its `Retry-After` reaches every shard. The remote-jobs cap
becomes leases: members of a sorted set scored by expiry, renewed while held, so a process
killed with SIGKILL frees its slots after the TTL. A lost store is never papered over with
per-process limits: `on_lost` is told once (the batch stops submitting and exits resumable),
and every later reservation waits, then fails, without sending anything.
"""

from __future__ import annotations

import contextlib
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import anyio

from runner.errors import ErrorKind, StoreLostError, UsageError
from runner.http.limits import AnyioClock, Bucket, Clock, Gate
from runner.plan import EndpointClass

if TYPE_CHECKING:
    from redis.asyncio import Redis

ENV_STORE = "RUNNER_RATE_STORE"
PREFIX = "runner"
DEFAULT_LEASE_TTL = 15.0  # seconds a lease outlives a process that stopped renewing it
TICK = 0.02  # how often the keeper looks at what each provider needs (local, no Redis)
DENIED_TICK = 0.1  # how often it asks again for a lease the cap denied
# After the store is lost, a request still waiting for it waits this long (past the
# interrupt's grace, so workers are cancelled first) and then fails, having sent nothing.
LOST_WAIT = 5.0
TIMEOUT = 2.0  # seconds for one Redis command or connection
# Several processes (hosts) reach a provider with more jitter than one event loop: shared
# budgets pace at this fraction of the Gate's rate (itself 95 % of the declared one).
SHARED_SAFETY = 0.95
LATE_RETRIES = 2  # a request woken late takes a new slot at most this often, then goes

# KEYS: tat, pause. ARGV: interval s, burst. Returns the delay (s) as a string (Redis turns a
# Lua number into an integer).
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tau = (tonumber(ARGV[2]) - 1) * interval
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
local start = math.max(now, tat - tau, paused)
local new = math.max(tat, now, paused) + interval
redis.call('SET', KEYS[1], string.format('%.6f', new), 'PX', math.ceil((new - now) * 1000) + 60000)
return string.format('%.6f', start - now)
"""

# KEYS: pause. ARGV: seconds. Nothing leaves before now + seconds (server clock).
PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local untl = now + tonumber(ARGV[1])
local old = tonumber(redis.call('GET', KEYS[1]) or '0')
if untl > old then
  local ms = math.ceil(tonumber(ARGV[1]) * 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.6f', untl), 'PX', ms)
end
return 1
"""

# KEYS: lease set. ARGV: cap, ttl, member... Grants members while the live leases < cap.
LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = tonumber(ARGV[1])
local expiry = now + tonumber(ARGV[2])
local n = redis.call('ZCARD', KEYS[1])
local granted = {}
for i = 3, #ARGV do
  if n >= cap then break end
  redis.call('ZADD', KEYS[1], expiry, ARGV[i])
  n = n + 1
  granted[#granted + 1] = ARGV[i]
end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
return granted
"""

# KEYS: lease set. ARGV: ttl, member... Extends the leases still held; returns those.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local expiry = now + tonumber(ARGV[1])
local kept = {}
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[1], 'XX', 'CH', expiry, ARGV[i]) == 1 then
    kept[#kept + 1] = ARGV[i]
  end
end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
return kept
"""


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """A parsed `--rate-store` URL: the Redis URL itself and runner's own query options
    (`lease_ttl=SECONDS`, `prefix=NAME`), which are taken off before it reaches redis-py."""

    url: str
    lease_ttl: float = DEFAULT_LEASE_TTL
    prefix: str = PREFIX

    @property
    def shown(self) -> str:
        """The URL as printed and recorded: a password replaced by `***`."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def parse_store(text: str, where: str = "--rate-store") -> StoreConfig:
    """`redis://[:PASSWORD@]HOST:PORT/DB`, `rediss://...` or `unix:///PATH?db=N`, with the
    optional `lease_ttl` and `prefix` query options; UsageError (exit 2) otherwise."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise UsageError(
            f"{where}: {text!r} is not a Redis URL (redis://HOST:PORT/DB, rediss://..., "
            "unix:///PATH)"
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    ttl = DEFAULT_LEASE_TTL
    if "lease_ttl" in query:
        raw = query.pop("lease_ttl")[-1]
        try:
            ttl = float(raw)
        except ValueError:
            ttl = math.nan
        if not 1.0 <= ttl <= 3600.0:
            raise UsageError(f"{where}: lease_ttl={raw!r}: give seconds from 1 to 3600")
    prefix = query.pop("prefix", [PREFIX])[-1] or PREFIX
    rest = "&".join(f"{k}={v}" for k, values in query.items() for v in values)
    url = f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{rest}" if rest else "")
    return StoreConfig(url, ttl, prefix)


def _redis_module() -> Any:
    try:
        import redis.asyncio
    except ImportError:
        raise UsageError(
            "--rate-store needs the redis package: pip install 'runner[redis]'"
        ) from None
    return redis


def check_store(config: StoreConfig) -> None:
    """Refuse, before anything is created, a store that does not answer (exit 2)."""
    redis = _redis_module()
    client = redis.Redis.from_url(
        config.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        raise UsageError(
            f"--rate-store {config.shown}: no answer ({exc}); start Redis there or fix the URL"
        ) from None
    finally:
        client.close()


class GateShare:
    """What one Gate delegates to the store (`Gate.shared`): its budgets, its pause, its
    remote-jobs leases."""

    def __init__(self, store: SharedBudget, gate: Gate) -> None:
        self.store = store
        self.gate = gate
        base = f"{store.config.prefix}:{gate.provider}"
        self.pause_key = f"{base}:pause"
        self.lease_key = f"{base}:in_flight"
        self.budget_key = f"{base}:budget:"
        self.leases: list[str] = []
        self.pending_pause: float | None = None  # gate-clock instant to pause until
        self.renewed_at = -math.inf
        self.denied_at = -math.inf

    # -- the Gate's side ---------------------------------------------------------------------

    async def acquire(self, endpoint: EndpointClass) -> None:
        """One reservation per budget this request counts against (endpoint class first,
        the provider's budget last), waiting out each delay; none declared: the pause."""
        gate, clock = self.gate, self.gate.clock
        await self.flush_pause()
        budgets: list[tuple[str, Bucket | None]] = []
        if endpoint in gate.endpoints:
            budgets.append((endpoint, gate.endpoints[endpoint]))
        if gate.requests is not None:
            budgets.append(("requests", gate.requests))  # the provider-wide budget last
        for name, bucket in budgets or [("unbudgeted", None)]:
            # No budget declared: a reservation at a rate no provider serves, for the pause.
            rate = None if bucket is None else bucket.aimd.rate(clock.now()) * SHARED_SAFETY
            interval = 1e-6 if rate is None else 1.0 / rate
            burst = 1 if bucket is None else bucket.pacer.burst
            for attempt in range(1 + LATE_RETRIES):
                delay = await self.store.call(
                    "reserve", [self.budget_key + name, self.pause_key], [f"{interval:.9f}", burst]
                )
                due = clock.now() + float(delay)
                if due > clock.now():
                    await clock.sleep(due - clock.now())
                # The stall guard across processes: woken well past its slot (a busy
                # loop), the request would land next to the one after it; it takes a
                # later slot instead, and the missed one goes unused.
                if clock.now() - due <= interval / 2 or attempt == LATE_RETRIES:
                    break

    def pause(self, seconds: float) -> None:
        """The gate paused its provider (a 429, an empty quota): every process learns it at
        its next reservation (the keeper sends it within a tick)."""
        until = self.gate.clock.now() + seconds
        self.pending_pause = max(self.pending_pause or -math.inf, until)

    def may_submit(self, jobs_in_flight: int) -> bool:
        """A new remote job needs a lease of its own beyond those of the jobs in flight."""
        if self.gate.in_flight_cap is None:
            return True
        return jobs_in_flight < len(self.leases)

    # -- the keeper's side -------------------------------------------------------------------

    async def flush_pause(self) -> None:
        until, self.pending_pause = self.pending_pause, None
        if until is None:
            return
        left = until - self.gate.clock.now()
        if left > 0:
            await self.store.call("pause", [self.pause_key], [f"{left:.6f}"])

    async def keep(self, waiting: int) -> bool:
        """Hold one lease per job in flight plus one per submit waiting (up to the cap, the
        store decides); renew them; give back the rest. True when new leases came."""
        cap = self.gate.in_flight_cap
        if cap is None:
            return False
        now = self.gate.clock.now()
        ttl = self.store.config.lease_ttl
        if self.leases and now - self.renewed_at >= ttl / 3:
            kept = await self.store.call("renew", [self.lease_key], [ttl, *self.leases])
            self.leases = [_text(m) for m in kept]
            self.renewed_at = now
        desired = self.gate.jobs_in_flight + waiting
        held = len(self.leases)
        if held > desired:
            extra, self.leases = self.leases[desired:], self.leases[:desired]
            await self.store.call("release", [self.lease_key], extra)
            return False
        if held == desired or now - self.denied_at < DENIED_TICK:
            return False
        asked = [secrets.token_hex(8) for _ in range(desired - held)]
        granted = await self.store.call("lease", [self.lease_key], [cap, ttl, *asked])
        if len(granted) < len(asked):
            self.denied_at = now
        if not self.leases:
            self.renewed_at = now
        self.leases.extend(_text(m) for m in granted)
        return bool(granted)


def _text(member: Any) -> str:
    return member.decode() if isinstance(member, bytes) else str(member)


Lost = Callable[[str], None]


class SharedBudget:
    """The process's connection to the store and a GateShare per provider."""

    def __init__(self, config: StoreConfig, *, on_lost: Lost, clock: Clock | None = None):
        self.config = config
        self.on_lost = on_lost
        self.clock: Clock = clock or AnyioClock()
        self.shares: dict[str, GateShare] = {}
        self.lost: str | None = None
        self.calls = 0  # Redis round trips (for the benchmark)
        self._client: Redis | None = None
        self._scripts: dict[str, Any] = {}

    def attach(self, gate: Gate) -> GateShare:
        share = self.shares[gate.provider] = GateShare(self, gate)
        gate.shared = share
        return share

    def _connect(self) -> Redis:
        if self._client is None:
            redis = _redis_module()
            self._client = redis.asyncio.Redis.from_url(
                self.config.url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
            )
            for name, body in (("reserve", RESERVE), ("pause", PAUSE), ("lease", LEASE)):
                self._scripts[name] = self._client.register_script(body)
            self._scripts["renew"] = self._client.register_script(RENEW)
        return self._client

    async def call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """Run one of the scripts (or `release`) on the store; a lost store is reported once
        and then nothing goes through it: the caller waits, then fails without sending."""
        if self.lost is None:
            redis = _redis_module()
            try:
                client = self._connect()
                self.calls += 1
                if script == "release":
                    return await client.zrem(keys[0], *args)
                return await self._scripts[script](keys=keys, args=args)
            except (redis.RedisError, OSError) as exc:
                self._lose(f"{type(exc).__name__}: {exc}")
        await self.clock.sleep(LOST_WAIT)
        raise StoreLostError(
            f"the rate store {self.config.shown} is lost: not sent",
            provider=keys[0].split(":")[1] if ":" in keys[0] else "",
            job_id=None,
            kind=ErrorKind.OTHER,
            network="rate store lost",
        )

    def _lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = reason
        self.on_lost(
            f"lost the rate store {self.config.shown} ({reason}): no new submits; "
            "the batch stops so that no shard goes over the shared limits"
        )

    async def keep(
        self, waiting: Mapping[str, Callable[[], int]], wake: Callable[[str], None]
    ) -> None:
        """Runs beside the engine until cancelled: sends pauses, holds, renews and gives back
        leases, wakes a provider's workers when a lease came; gives every lease back at the
        end (a process that cannot, killed, lets them expire)."""
        try:
            with contextlib.suppress(StoreLostError):  # told once; the batch is stopping
                while self.lost is None:
                    for name, share in self.shares.items():
                        await share.flush_pause()
                        if await share.keep(waiting[name]() if name in waiting else 0):
                            wake(name)
                    await self.clock.sleep(TICK)
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(TIMEOUT):
                await self.close()

    async def close(self) -> None:
        """Give back every lease held and close the connection."""
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            if self.lost is None:
                for share in self.shares.values():
                    if share.leases:
                        await client.zrem(share.lease_key, *share.leases)
                        share.leases = []
        with contextlib.suppress(Exception):
            await client.aclose()
