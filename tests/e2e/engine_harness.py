"""Run the engine on a few jobs of one provider against a served sandbox (real sockets).

Stands in for `runner run` until that command lands: the same Engine, ProviderClient,
Gate, httpx transport and BatchDir the command wires together, with tiny poll intervals.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.engine.engine import Engine, EngineResult
from runner.http.backoff import RetryPolicy
from runner.http.client import ProviderClient, make_transport
from runner.http.limits import Gate
from runner.plan import JobSpec, Plan, PollPolicy, ProviderSettings, Secret
from runner.providers.base import Adapter
from runner.sandbox.server import RunningSandbox
from runner.store.results import BatchDir

FAST = PollPolicy(0.02, 0.1, 1.5)
KEYS = {
    "bulkgrid": "bg_live_e2e",
    "lobstr": "lobstr-e2e",
    "skop": "sk-e2e",
}


@dataclass
class Ran:
    result: EngineResult
    batch: BatchDir

    def job(self, job_id: str) -> Path:
        return self.batch.path / "jobs" / job_id


def spec(provider: str, job_id: str, type_: str, params: dict[str, Any], **kw: Any) -> JobSpec:
    return JobSpec(id=job_id, provider=provider, type=type_, params=params, poll=FAST, **kw)


async def run_jobs(
    sandbox: RunningSandbox,
    adapter: Adapter,
    jobs: list[JobSpec],
    root: Path,
    **settings: Any,
) -> Ran:
    name = adapter.info.name
    key = Secret(KEYS[name])
    manifest = f"# e2e {name}\n".encode()
    provider = ProviderSettings(
        name=name,
        base_url=sandbox.base_urls[name],
        api_key=key,
        api_key_var=adapter.info.api_key_env,
        limits=settings.pop("limits", adapter.info.default_limits),
        poll=FAST,
        timeout=60.0,
        **settings,
    )
    plan = Plan(
        name=f"e2e-{name}",
        source=root / "manifest.yaml",
        manifest_bytes=manifest,
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
        providers={name: provider},
        jobs=tuple(jobs),
        secrets=(key,),
    )
    batch = BatchDir.create(root, plan)
    gate = Gate(name, provider.limits, pool_size=4)
    client = ProviderClient(
        provider=name,
        base_url=provider.base_url,
        api_key=key,
        adapter=adapter,
        gate=gate,
        transport=make_transport(4),
        retry=RetryPolicy(attempts=3, base=0.01, cap=0.05),
    )
    try:
        engine = Engine(plan, clients={name: client}, adapters={name: adapter}, output=batch)
        result = await engine.run()
    finally:
        await client.transport.aclose()
    return Ran(result, batch)
