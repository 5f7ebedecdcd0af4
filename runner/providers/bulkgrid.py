"""Bulkgrid adapter.

Published limits: no fixed public host is documented (provider-docs.md §1.1); numbers
undocumented (§1.4): conservative defaults.
"""

from __future__ import annotations

from runner.plan import Limits, PollPolicy, Rate
from runner.providers.base import ProviderInfo

INFO = ProviderInfo(
    name="bulkgrid",
    title="Bulkgrid",
    default_base_url="https://bulkgrid.com",
    api_key_env="BULKGRID_API_KEY",
    job_types=("extract", "crawl", "deep_crawl", "map"),
    default_limits=Limits(requests=Rate(5, 1.0), in_flight=10),
    default_poll=PollPolicy(3.0, 15.0, 1.5),
)
