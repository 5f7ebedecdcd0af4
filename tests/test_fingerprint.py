"""A job's fingerprint: stable across processes (no Python hash()), blind to the order of
params keys, to the job id and to everything that does not change what is asked, and the
same for a job written out by hand as for the one `each` expands to."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.errors import IllegalTransitionError
from runner.fingerprint import fingerprint_document, job_fingerprint
from runner.lifecycle import Event, State, advance
from runner.manifest.loader import parse_manifest
from runner.plan import JobSpec, PollPolicy

ROOT = Path(__file__).resolve().parents[1]
SPEC = JobSpec(
    id="acme-pricing",
    provider="spidra",
    type="scrape",
    params={"urls": [{"url": "https://acme.example/pricing"}], "prompt": "List", "output": "json"},
)
# The fingerprint of SPEC, pinned: a change here invalidates every result users have, so it
# must come with a new FINGERPRINT_VERSION (and this value updated on purpose).
PINNED = "sha256:392bc12bcd3c90bdef2fb81e163b1f49f80c325f9856f97461c4ab70c19d43f8"


def plan_of(document: dict[str, Any], tmp: Path) -> list[JobSpec]:
    data = yaml.safe_dump(document, sort_keys=False).encode()
    loaded = parse_manifest(data, source=tmp / "m.yaml", env={}, sandbox_keys=True)
    return list(loaded.plan.jobs)


def manifest(jobs: list[dict[str, Any]], **defaults: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "name": "fp",
        "defaults": defaults,
        "providers": {"spidra": {"api_key": "${SPIDRA_API_KEY}"}, "skop": {"api_key": "${K}"}},
        "jobs": jobs,
    }


def test_the_fingerprint_is_a_sha256_of_canonical_json_pinned_across_releases() -> None:
    value = job_fingerprint(SPEC)
    assert value.startswith("sha256:")
    assert len(value) == len("sha256:") + 64
    assert value == PINNED


@pytest.mark.parametrize("seed", ["0", "1", "4242"])
def test_the_same_in_another_process_whatever_its_hash_seed(seed: str) -> None:
    code = (
        "from runner.plan import JobSpec\n"
        "from runner.fingerprint import job_fingerprint\n"
        "spec = JobSpec(id='other', provider='spidra', type='scrape', params={'output': 'json',"
        " 'prompt': 'List', 'urls': [{'url': 'https://acme.example/pricing'}]})\n"
        "print(job_fingerprint(spec))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": seed}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == job_fingerprint(SPEC)


def test_the_order_of_params_keys_does_not_change_it_at_any_depth() -> None:
    reordered = dataclasses.replace(
        SPEC,
        params={
            "output": "json",
            "prompt": "List",
            "urls": [{"url": "https://acme.example/pricing"}],
        },
    )
    assert job_fingerprint(reordered) == job_fingerprint(SPEC)
    nested = dataclasses.replace(
        SPEC, params={**SPEC.params, "opts": {"b": 1, "a": {"y": 2, "x": 3}}}
    )
    renested = dataclasses.replace(
        SPEC, params={"opts": {"a": {"x": 3, "y": 2}, "b": 1}, **SPEC.params}
    )
    assert job_fingerprint(nested) == job_fingerprint(renested)


def test_what_the_job_asks_changes_it_and_nothing_else_does() -> None:
    base = job_fingerprint(SPEC)
    same = [
        dataclasses.replace(SPEC, id="renamed"),
        dataclasses.replace(SPEC, tags=("nightly",)),
        dataclasses.replace(SPEC, timeout=5.0),
        dataclasses.replace(SPEC, poll=PollPolicy(1.0, 2.0, 1.1)),
        dataclasses.replace(SPEC, index=7),
        dataclasses.replace(SPEC, max_age=60.0),
    ]
    assert {job_fingerprint(s) for s in same} == {base}
    different = [
        dataclasses.replace(SPEC, provider="pulse"),
        dataclasses.replace(SPEC, type="batch"),
        dataclasses.replace(SPEC, params={**SPEC.params, "prompt": "List all"}),
        dataclasses.replace(SPEC, params={**SPEC.params, "output": "markdown"}),
        dataclasses.replace(SPEC, params={**SPEC.params, "extra": None}),
        dataclasses.replace(SPEC, fetch={"pages": True}),
        dataclasses.replace(SPEC, retry="failed"),
    ]
    found = [job_fingerprint(s) for s in different]
    assert base not in found
    assert len(set(found)) == len(different)
    # Every field that goes in is one the reader can see (runner diff shows them).
    assert set(fingerprint_document(SPEC)) == {
        "fingerprint_version",
        "manifest_version",
        "provider",
        "type",
        "params",
        "fetch",
        "retry",
    }


def test_an_each_job_has_the_fingerprint_of_the_same_job_written_out(tmp_path: Path) -> None:
    expanded = plan_of(
        manifest(
            [
                {
                    "id": "site-{n}",
                    "provider": "spidra",
                    "type": "scrape",
                    "each": ["a", "b"],
                    "params": {"urls": [{"url": "https://{item}.example/"}], "prompt": "P {n}"},
                    "tags": ["x"],
                }
            ]
        ),
        tmp_path,
    )
    written = plan_of(
        manifest(
            [
                {
                    "id": f"by-hand-{n}",
                    "provider": "spidra",
                    "type": "scrape",
                    "params": {"prompt": f"P {n}", "urls": [{"url": f"https://{item}.example/"}]},
                }
                for n, item in ((1, "a"), (2, "b"))
            ],
            timeout="1h",
        ),
        tmp_path,
    )
    assert [job_fingerprint(s) for s in expanded] == [job_fingerprint(s) for s in written]
    assert job_fingerprint(expanded[0]) != job_fingerprint(expanded[1])  # the items differ


def test_fetch_defaults_are_filled_in_so_spelling_one_out_changes_nothing(tmp_path: Path) -> None:
    job = {
        "id": "docs",
        "provider": "skop",
        "type": "scrape",
        "params": {"website": "https://investors.example/", "prompt": "Annual reports"},
    }
    implicit = plan_of(manifest([job]), tmp_path)[0]
    explicit = plan_of(manifest([{**job, "fetch": {"documents": True}}]), tmp_path)[0]
    other = plan_of(manifest([{**job, "fetch": {"documents": False}}]), tmp_path)[0]
    assert job_fingerprint(implicit) == job_fingerprint(explicit)
    assert job_fingerprint(other) != job_fingerprint(implicit)


def test_max_age_is_read_per_job_or_from_defaults(tmp_path: Path) -> None:
    job = {
        "id": "docs",
        "provider": "skop",
        "type": "scrape",
        "params": {"website": "https://investors.example/", "prompt": "Annual reports"},
    }
    assert plan_of(manifest([job]), tmp_path)[0].max_age is None
    assert plan_of(manifest([job], max_age="7d"), tmp_path)[0].max_age == 7 * 86400
    own = plan_of(manifest([{**job, "max_age": "12h"}], max_age="7d"), tmp_path)[0]
    assert own.max_age == 12 * 3600


def test_reused_moves_only_a_planned_job_and_only_to_succeeded() -> None:
    assert advance(State.PLANNED, Event.REUSE) is State.SUCCEEDED
    for state in set(State) - {State.PLANNED}:
        with pytest.raises(IllegalTransitionError):
            advance(state, Event.REUSE)
