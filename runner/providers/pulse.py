"""Pulse adapter.

Published limits: rate numbers undocumented (provider-docs.md §5.4); exponential polling advised.
"""

from __future__ import annotations

from runner.plan import Limits, PollPolicy, Rate
from runner.providers.base import ProviderInfo

INFO = ProviderInfo(
    name="pulse",
    title="Pulse",
    default_base_url="https://api.runpulse.com",
    api_key_env="PULSE_API_KEY",
    job_types=("extract", "schema", "split", "tables"),
    default_limits=Limits(requests=Rate(10, 1.0), in_flight=20),
    default_poll=PollPolicy(2.0, 30.0, 1.5),
)
