"""Shared by the scale-out tests and the shard benchmark: a sandbox in its own process, shard
processes of `runner run`, and manifests whose limits the sandbox enforces."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
ENV_KEYS = {"BULKGRID_API_KEY": "bg_shard", "SKOP_API_KEY": "sk_shard"}


def runner(*args: str) -> list[str]:
    return [sys.executable, "-m", "runner", *args]


@contextmanager
def sandbox_process(tmp: Path, scenario: dict[str, Any], seed: int = 7) -> Iterator[str]:
    """`runner sandbox` in its own process (the shards use the other core); yields its origin."""
    path = tmp / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario))
    process = subprocess.Popen(
        runner("sandbox", "--seed", str(seed), "--scenario", str(path)),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(5)]
        urls = dict(line.split() for line in lines)
        yield urls["bulkgrid"]  # mounted at the origin
    except BaseException:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
        raise
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0  # a sandbox stops cleanly on SIGTERM


def books(origin: str) -> dict[str, Any]:
    providers: dict[str, Any] = httpx.get(f"{origin}/_sandbox/stats").json()["providers"]
    return providers


def rate_manifest(
    tmp: Path, jobs: int, rate: int, *, name: str = "shards", on_interrupt: str = "detach"
) -> Path:
    """Bulkgrid extracts (its runs can be listed, so a submit cut by a kill is found again)
    under a declared requests budget of `rate` per second."""
    document = {
        "version": 1,
        "name": name,
        "defaults": {"timeout": "60s", "poll": {"initial": "300ms", "max": "600ms"}},
        "providers": {
            "bulkgrid": {
                "api_key": "${BULKGRID_API_KEY}",
                "limits": {"requests": {"rate": rate, "per": "1s"}},
                "on_interrupt": on_interrupt,
            }
        },
        "jobs": [
            {
                "id": "page-{n}",
                "provider": "bulkgrid",
                "type": "extract",
                "each": [f"p{i}" for i in range(jobs)],
                "params": {
                    "urls": ["https://shop.example/{item}"],
                    "query": "prices",
                    "schema": {"type": "object"},
                },
            }
        ],
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def in_flight_manifest(tmp: Path, jobs: int, cap: int, *, name: str = "capped") -> Path:
    """Skop scrapes under an in-flight cap of `cap` remote jobs (the sandbox refuses more)."""
    document = {
        "version": 1,
        "name": name,
        "defaults": {"timeout": "60s", "poll": {"initial": "200ms", "max": "400ms"}},
        "providers": {
            "skop": {
                "api_key": "${SKOP_API_KEY}",
                "limits": {"requests": {"rate": 200, "per": "1s"}, "in_flight": cap},
            }
        },
        "jobs": [
            {
                "id": "site-{n}",
                "provider": "skop",
                "type": "scrape",
                "each": [f"s{i}" for i in range(jobs)],
                "params": {"website": "https://{item}.example/", "prompt": "annual reports"},
                "fetch": {"documents": False},
            }
        ],
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def start_shards(
    manifest: Path,
    origin: str,
    out: Path,
    count: int,
    store: str | None,
    *,
    only: Sequence[int] | None = None,
    env: dict[str, str] | None = None,
) -> dict[int, subprocess.Popen[str]]:
    import os

    extra = ["--rate-store", store] if store else []
    return {
        k: subprocess.Popen(
            runner(
                "run",
                str(manifest),
                "--sandbox",
                origin,
                "--out",
                str(out),
                "--shard",
                f"{k}/{count}",
                "--quiet",
                *extra,
            ),
            cwd=ROOT,
            env={**os.environ, **ENV_KEYS, **(env or {})},
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (only or range(1, count + 1))
    }


def finish(processes: dict[int, subprocess.Popen[str]], timeout: float = 120) -> dict[int, Any]:
    """{k: (exit code, stderr)} once every shard process ended."""
    done = {}
    for k, process in processes.items():
        _, err = process.communicate(timeout=timeout)
        done[k] = (process.returncode, err)
    return done


def shard_dir(out: Path, name: str, k: int, count: int) -> Path | None:
    found = sorted((out / name).glob(f"*-s{k}of{count}")) if (out / name).is_dir() else []
    return found[-1] if found else None


def wait_for_shard(out: Path, name: str, k: int, count: int, timeout: float = 30) -> Path:
    """The batch directory of shard k/count once it exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = shard_dir(out, name, k, count)
        if found is not None:
            return found
        time.sleep(0.01)
    raise AssertionError(f"no batch directory of shard {k}/{count} under {out} in {timeout}s")


def resume(batch: Path) -> subprocess.Popen[str]:
    import os

    return subprocess.Popen(
        runner("resume", str(batch), "--quiet"),
        cwd=ROOT,
        env={**os.environ, **ENV_KEYS},
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_log(path: Path, needle: str, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if path.read_text().count(needle) >= count:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.01)
    raise AssertionError(f"{path}: fewer than {count} {needle!r} in {timeout}s")
