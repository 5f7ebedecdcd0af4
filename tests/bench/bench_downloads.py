"""Out-of-band downloads vs the provider's request budget (Skop documents, 60 requests/min).

Run: .venv/bin/python tests/bench/bench_downloads.py
A Skop job finding N documents runs against a local sandbox at Skop's published limits,
through `runner run`'s path. Documents live off the API (third-party hosts): they spend no
Skop request, so the job takes about its submit + polls + results requests, not N seconds
more. For contrast, a few of the same files fetched as API downloads (through the gate, the
old behaviour) cost one second each at 60/min.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from pathlib import Path

import anyio
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runner.batch.run import run_batch
from runner.http.client import ProviderClient, make_transport
from runner.http.limits import Gate
from runner.providers import skop
from runner.sandbox.app import create_app
from runner.sandbox.scenario import Scenario
from runner.sandbox.server import serve_in_thread

DOCUMENTS = 20
CHARGED = 3


def main() -> None:
    scenario = Scenario.from_dict(
        {
            "time_scale": 50,
            "providers": {
                "skop": {
                    "duration": {"min": 1, "max": 1},
                    "results": {"min": DOCUMENTS, "max": DOCUMENTS},
                }
            },
        }
    )
    with (
        serve_in_thread(create_app(seed=0, scenario=scenario)) as sandbox,
        tempfile.TemporaryDirectory() as tmp,
    ):
        root = Path(tmp)
        document = {
            "version": 1,
            "name": "bench-downloads",
            "defaults": {"timeout": "5m", "poll": {"initial": "100ms", "max": "200ms"}},
            "providers": {"skop": {"api_key": "${SKOP_API_KEY}"}},  # published: 60/min
            "jobs": [
                {
                    "id": "reports",
                    "provider": "skop",
                    "type": "scrape",
                    "params": {
                        "website": "https://reports.example",
                        "prompt": "Find the annual reports",
                    },
                    "fetch": {"min_confidence": 0.0},
                }
            ],
        }
        path = root / "m.yaml"
        path.write_text(yaml.safe_dump(document))
        started = time.perf_counter()
        code = run_batch(
            path, out=root / "out", sandbox=sandbox.origin, env={"SKOP_API_KEY": "sk-bench"},
            stderr=io.StringIO(),
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        job = next((root / "out").glob("*/*/jobs/reports"))
        files = sorted((job / "files").iterdir())
        outcome = json.loads((job / "job.json").read_text())
        print(
            f"skop job, {len(files)} documents off-budget at 60 req/min: {elapsed:.2f} s wall "
            f"(exit {code}, state {outcome['state']})"
        )
        urls = [d["url"] for d in json.loads((job / "result.json").read_text())["documents"]]

        async def charged() -> float:
            client = ProviderClient(
                provider="skop",
                base_url=sandbox.base_urls["skop"],
                api_key="sk-bench",
                adapter=skop.ADAPTER,
                gate=Gate("skop", skop.INFO.default_limits, pool_size=2),
                transport=make_transport(2),
            ).for_job("reports")
            began = time.perf_counter()
            try:
                for n, url in enumerate(urls[:CHARGED]):
                    # send_key on a URL under the API origin: the old, gated path
                    await client.download(url, root / f"charged-{n}", send_key=True)
            finally:
                await client.transport.aclose()
            return time.perf_counter() - began

        spent = anyio.run(charged)
        per_file = spent / (CHARGED - 1)  # the first goes out at once (burst 1)
        print(
            f"the same files as API downloads through the gate: {CHARGED} in {spent:.2f} s "
            f"(~{per_file:.2f} s per file after the first; {DOCUMENTS} would add "
            f"~{DOCUMENTS * per_file:.0f} s)"
        )


if __name__ == "__main__":
    main()
