"""Spidra adapter.

Published limits: 300 requests per IP per 15 min counting polls; 10 pending scrapes (provider-
docs.md §3.4).
"""

from __future__ import annotations

from runner.plan import Limits, PollPolicy, Rate
from runner.providers.base import ProviderInfo

INFO = ProviderInfo(
    name="spidra",
    title="Spidra",
    default_base_url="https://api.spidra.io/api",
    api_key_env="SPIDRA_API_KEY",
    job_types=("scrape", "batch", "crawl"),
    default_limits=Limits(requests=Rate(300, 900.0), in_flight=10),
    default_poll=PollPolicy(5.0, 15.0, 1.5),
)
