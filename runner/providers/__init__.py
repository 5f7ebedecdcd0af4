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

ADAPTERS: dict[str, Adapter] = {
    "bulkgrid": bulkgrid.ADAPTER,
    "lobstr": lobstr.ADAPTER,
    "spidra": spidra.ADAPTER,
    "skop": skop.ADAPTER,
    "pulse": pulse.ADAPTER,
}
