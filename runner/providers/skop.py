"""Skop adapter.

Published limits: rate numbers undocumented; concurrency_limit_exceeded exists (provider-
docs.md §4.4).
"""

from __future__ import annotations

from runner.plan import Limits, PollPolicy, Rate
from runner.providers.base import ProviderInfo

INFO = ProviderInfo(
    name="skop",
    title="Skop",
    default_base_url="https://api.skop.dev",
    api_key_env="SKOP_API_KEY",
    job_types=("scrape",),
    default_limits=Limits(requests=Rate(60, 60.0), in_flight=3),
    default_poll=PollPolicy(10.0, 60.0, 1.5),
)
