"""runner: run batches of asynchronous scraping and extraction jobs from YAML manifests."""

from __future__ import annotations

__version__ = "0.1.0"
