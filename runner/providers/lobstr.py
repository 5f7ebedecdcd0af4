"""Lobstr.io adapter.

Published limits: per-endpoint limits: /squids 120/min, /tasks 90/min, /runs 120/min, /results
2/s (provider-docs.md §2.4).
"""

from __future__ import annotations

from runner.plan import Limits, PollPolicy, Rate
from runner.providers.base import ProviderInfo

INFO = ProviderInfo(
    name="lobstr",
    title="Lobstr.io",
    default_base_url="https://api.lobstr.io/v1",
    api_key_env="LOBSTR_API_KEY",
    job_types=("run",),
    default_limits=Limits(
        endpoints={
            "submit": Rate(90, 60.0),
            "status": Rate(100, 60.0),
            "results": Rate(2, 1.0),
            "download": Rate(20, 60.0),
        },
        in_flight=5,
    ),
    default_poll=PollPolicy(10.0, 60.0, 1.5),
)
