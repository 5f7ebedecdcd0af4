"""Benchmark: `runner validate` on a manifest whose `each` expands to 100,000 jobs.

Target (issue 2): under 5 s and under 300 MB peak RSS on the 2-core machine. Runs the CLI
in a subprocess and reads its peak RSS from getrusage(RUSAGE_CHILDREN).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JOBS = 100_000
TARGET_SECONDS = 5.0
TARGET_MB = 300.0

MANIFEST = """\
version: 1
name: bench
providers:
  pulse: {{api_key: "${{PULSE_API_KEY}}"}}
  spidra: {{api_key: "${{SPIDRA_API_KEY}}"}}
jobs:
  - id: "doc-{{n}}"
    provider: pulse
    type: extract
    each: {{file: {file}}}
    params: {{file_url: "{{{field}}}", model: default, pages: "1-3"}}
"""


def run_once(kind: str, workdir: Path) -> tuple[float, float]:
    if kind == "text":
        data = "".join(f"https://files.example/invoices/{i:06d}.pdf\n" for i in range(JOBS))
        (workdir / "items.txt").write_text(data)
        manifest = MANIFEST.format(file="items.txt", field="item")
    else:
        rows = "".join(f"s{i},https://files.example/{i:06d}.pdf\n" for i in range(JOBS))
        (workdir / "items.csv").write_text("sku,url\n" + rows)
        manifest = MANIFEST.format(file="items.csv", field="url")
    path = workdir / f"bench-{kind}.yaml"
    path.write_text(manifest)
    env = {**os.environ, "PULSE_API_KEY": "k", "SPIDRA_API_KEY": "k"}
    runner = Path(sys.executable).with_name("runner")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = subprocess.run(
        [str(runner), "validate", str(path)], env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode != 0:
        raise SystemExit(f"validate failed ({done.returncode}): {done.stderr[-2000:]}")
    if peak_kb <= before:  # an earlier, bigger child already set the maximum
        print("  (peak RSS not attributable: an earlier child was larger)")
    return seconds, peak_kb / 1024


def main() -> int:
    failed = False
    for kind in ("text", "csv"):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, peak_mb = run_once(kind, Path(tmp))
        ok = seconds < TARGET_SECONDS and peak_mb < TARGET_MB
        failed |= not ok
        print(
            f"validate {JOBS:,} jobs from each ({kind}): {seconds:.2f} s, peak RSS "
            f"{peak_mb:.0f} MB (target < {TARGET_SECONDS:g} s, < {TARGET_MB:g} MB) "
            f"{'ok' if ok else 'MISSED'}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
