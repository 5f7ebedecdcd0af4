"""`runner run` against a hostile Pulse (tests/hostile.py): one job per misbehaviour in one
batch. The batch ends within the jobs' timeouts, every job ends with a message saying what
happened, and the runner's peak RSS stays bounded (measured from a wrapper process whose only
child is `runner run`, so no other test's subprocess counts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests import hostile

TIMEOUT = 3.0  # seconds: the jobs that test a timeout (their expected state says so)
# The others end on what their reply is, not on time: a longer timeout keeps a busy machine
# (inflating a bomb up to its cap takes CPU) from turning their "failed" into "timed_out".
OTHERS_TIMEOUT = 10.0
ENDS_ON_TIME = {"never-ending", "drip-submit", "drip-status", "drip-download"}
MARGIN = 12.0  # queueing behind 4 request slots, poll intervals, start-up on a busy machine
PEAK_RSS_LIMIT = 300 * 1024 * 1024
RSS_WRAPPER = """
import json, resource, subprocess, sys, time
started = time.monotonic()
try:
    code = subprocess.run(sys.argv[2:], timeout=float(sys.argv[1])).returncode
except subprocess.TimeoutExpired:
    code = None
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"code": code, "seconds": time.monotonic() - started, "peak": peak}))
"""

# job id (= behaviour) → (state, words its error must contain)
EXPECTED: dict[str, tuple[str, str | None]] = {
    "ok": ("succeeded", None),
    "html-status": ("failed", "pulse: the status reply is not JSON: <!doctype html>"),
    "wrong-types": ("failed", "pulse: the submit reply has an unusable job_id"),
    "truncated-submit": ("submit_unknown", "POST /extract: the reply was cut short after"),
    "redirect-status": ("failed", "HTTP 302: redirected to /job/redirect-status"),
    "redirect-download": ("failed", "too many redirects (more than 5; a redirect loop?)"),
    # (its last poll may still be waiting for a slot or a reply when the timeout comes)
    "never-ending": ("timed_out", "timed out after 3s"),
    "drip-submit": ("submit_unknown", "no complete reply to the submit within the job's timeout"),
    "drip-status": ("timed_out", "timed out after 3s with a request still unanswered"),
    "drip-download": ("timed_out", "timed out after 3s while fetching the result"),
    "huge-submit": ("submit_unknown", "POST /extract: the reply is larger than the 16 MiB cap"),
    "huge-status": ("failed", "GET /job/huge-status: the reply is larger than the 16 MiB cap"),
    "gzip-bomb": ("failed", "GET /job/gzip-bomb: the reply is larger than the 16 MiB cap"),
    "deflate-bomb": ("failed", "GET /job/deflate-bomb: the reply is larger than the 16 MiB cap"),
}


def write_manifest(tmp: Path, origin: str) -> Path:
    document = {
        "version": 1,
        "name": "hostile",
        "defaults": {"timeout": "3s", "poll": {"initial": "50ms", "max": "200ms"}},
        "providers": {
            "pulse": {
                "api_key": "${PULSE_API_KEY}",
                "base_url": origin,
                # 16 requests/s: a pool of 4 request slots, so 4 stuck requests would hold
                # every slot of the provider if a deadline did not free them
                "limits": {"requests": {"rate": 16, "per": "1s"}},
            }
        },
        "jobs": [
            {
                "id": name,
                "provider": "pulse",
                "type": "extract",
                "params": {"file_url": f"https://hostile.test/{name}.pdf"},
                **({} if name in ENDS_ON_TIME else {"timeout": f"{OTHERS_TIMEOUT:g}s"}),
            }
            for name in hostile.PULSE_BEHAVIOURS
        ],
    }
    path = tmp / "hostile.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def run_measured(tmp: Path, manifest: Path, limit: float) -> dict[str, Any]:
    env = {**os.environ, "PULSE_API_KEY": "pulse_hostile_key"}
    command = [sys.executable, "-m", "runner", "run", str(manifest), "--out", str(tmp / "out")]
    done = subprocess.run(
        [sys.executable, "-c", RSS_WRAPPER, str(limit), *command, "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=limit + 30,
        check=True,
    )
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return measured


def test_one_batch_of_every_hostile_reply_ends_in_time_in_bounded_memory(tmp_path: Path) -> None:
    assert set(EXPECTED) == set(hostile.PULSE_BEHAVIOURS)
    with hostile.serve_in_thread(hostile.pulse()) as server:
        measured = run_measured(tmp_path, write_manifest(tmp_path, server.origin), 60.0)
        seen = [(s.method, s.path) for s in server.seen]
    assert measured["code"] == 1, measured  # the batch finished; some jobs did not succeed
    assert measured["seconds"] < OTHERS_TIMEOUT + MARGIN, measured
    assert measured["peak"] < PEAK_RSS_LIMIT, measured
    batch = next(p for p in (tmp_path / "out" / "hostile").iterdir() if p.name != "latest")
    for name, (state, words) in EXPECTED.items():
        job = json.loads((batch / "jobs" / name / "job.json").read_text())
        assert job["state"] == state, (name, job)
        if words is not None:
            assert words in job["error"], (name, job["error"])
    # a reply too large is not asked for again
    assert seen.count(("GET", "/job/huge-status")) == 1
    assert seen.count(("POST", "/extract")) == len(EXPECTED)  # no submit sent twice
    assert "pulse_hostile_key" not in (batch / "log.jsonl").read_text()
