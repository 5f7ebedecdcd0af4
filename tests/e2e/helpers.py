"""Shared by the end-to-end run tests: write a manifest, run it against a sandbox, read books."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from runner.batch.run import run_batch
from runner.sandbox.server import RunningSandbox

FAST_POLL = {"initial": "20ms", "max": "100ms", "multiplier": 1.5}


@dataclass
class Outcome:
    code: int
    stderr: str
    batch: Path  # results/<name>/<batch-id>
    books: dict[str, Any]  # GET /_sandbox/stats "providers"

    def job(self, job_id: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.batch / "jobs" / job_id / "job.json").read_text())
        return data

    def states(self) -> dict[str, str]:
        return {
            path.name: json.loads((path / "job.json").read_text())["state"]
            for path in sorted((self.batch / "jobs").iterdir())
        }


def spidra_jobs(n: int, prefix: str = "s") -> dict[str, Any]:
    return {
        "id": f"{prefix}-{{n}}",
        "provider": "spidra",
        "type": "scrape",
        "each": [f"site{i}" for i in range(n)],
        "params": {
            "urls": [{"url": "https://{item}.example/pricing"}],
            "prompt": "List every plan",
            "output": "json",
        },
    }


def pulse_jobs(n: int, prefix: str = "p") -> dict[str, Any]:
    return {
        "id": f"{prefix}-{{n}}",
        "provider": "pulse",
        "type": "extract",
        "each": [f"doc{i}" for i in range(n)],
        "params": {"file_url": "https://files.example/{item}.pdf"},
    }


def lobstr_runs(items: list[str], prefix: str = "run") -> dict[str, Any]:
    return {
        "id": f"{prefix}-{{n}}",
        "provider": "lobstr",
        "type": "run",
        "each": items,
        "params": {
            "crawler": "google-maps-search-export",
            "params": {"language": "fr"},
            "tasks": [{"url": "https://maps.example/{item}"}],
        },
    }


def manifest(
    tmp: Path,
    jobs: list[dict[str, Any]],
    *,
    providers: dict[str, Any] | None = None,
    timeout: str = "30s",
    name: str = "e2e",
) -> Path:
    document = {
        "version": 1,
        "name": name,
        "defaults": {"timeout": timeout, "poll": FAST_POLL},
        "providers": providers
        or {
            "spidra": {"api_key": "${SPIDRA_API_KEY}"},
            "pulse": {"api_key": "${PULSE_API_KEY}"},
        },
        "jobs": jobs,
    }
    path = tmp / "manifest.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run(
    tmp: Path,
    path: Path,
    sandbox: RunningSandbox,
    *,
    env: dict[str, str] | None = None,
) -> Outcome:
    stderr = io.StringIO()
    code = run_batch(
        path,
        out=tmp / "results",
        sandbox=sandbox.origin,
        env=env or {"SPIDRA_API_KEY": "spd_test", "PULSE_API_KEY": "pulse_test"},
        stderr=stderr,
    )
    stats = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]
    batches = [p for p in (tmp / "results").glob("*/*") if p.name != "latest"]
    assert len(batches) == 1
    return Outcome(code, stderr.getvalue(), batches[0], stats)


def sandbox_books(sandbox: RunningSandbox, provider: str | None = None) -> Any:
    """The sandbox's books (`GET /_sandbox/stats`): every provider's, or one provider's."""
    providers = httpx.get(f"{sandbox.origin}/_sandbox/stats").json()["providers"]
    return providers if provider is None else providers[provider]


def submits_once(books: dict[str, Any], provider: str, expected: int) -> None:
    """Every distinct submit body reached the provider exactly once."""
    submits = books[provider]["submits"]
    assert len(submits) == expected, submits
    assert set(submits.values()) == {1}, submits


def within_limit(books: dict[str, Any], provider: str) -> None:
    """The declared limit is the real one: no window exceeded it and no 429 was served."""
    entry = books[provider]
    assert entry["throttled"] == 0
    assert entry["max_window_requests"] <= entry["limit"]["requests"]
