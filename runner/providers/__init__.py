"""The provider registry: one module per provider, one line each here."""

from __future__ import annotations

from runner.providers import bulkgrid, lobstr, pulse, skop, spidra
from runner.providers.base import Adapter, ProviderInfo

PROVIDERS: dict[str, ProviderInfo] = {
    "bulkgrid": bulkgrid.INFO,
    "lobstr": lobstr.INFO,
    "spidra": spidra.INFO,
    "skop": skop.INFO,
    "pulse": pulse.INFO,
}

# Providers whose adapter is built; a plan naming another provider cannot run yet.
ADAPTERS: dict[str, Adapter] = {
    "spidra": spidra.ADAPTER,
    "pulse": pulse.ADAPTER,
}
