"""The provider registry: every provider runner knows, one line each, and `register` for more.

A provider declares everything once, in its module: `INFO` (name, job types and their
schemas, limits, sandbox API, estimate rules) and `ADAPTER` (the wire format, whose `info`
is `INFO`). The manifest schema, the settings, the engine, the sandbox and the estimate all
read the entries here.
"""

from __future__ import annotations

from runner.providers import bulkgrid, lobstr, pulse, skop, spidra
from runner.providers.base import Adapter, ProviderInfo

BUILT_IN: tuple[Adapter, ...] = (
    bulkgrid.ADAPTER,
    lobstr.ADAPTER,
    spidra.ADAPTER,
    skop.ADAPTER,
    pulse.ADAPTER,
)

# Both keyed by provider name, in registration order (the order every listing shows).
PROVIDERS: dict[str, ProviderInfo] = {}
ADAPTERS: dict[str, Adapter] = {}


def register(adapter: Adapter) -> None:
    """Make `adapter` (and its `info`) known to manifests, runs, the sandbox and estimates.

    ValueError for a name already registered: a provider is declared once."""
    name = adapter.info.name
    if name in PROVIDERS:
        raise ValueError(f"provider {name!r} is already registered")
    PROVIDERS[name] = adapter.info
    ADAPTERS[name] = adapter


def unregister(name: str) -> None:
    """Forget a provider registered with `register` (tests, plugins unloading)."""
    PROVIDERS.pop(name, None)
    ADAPTERS.pop(name, None)


for _adapter in BUILT_IN:
    register(_adapter)
