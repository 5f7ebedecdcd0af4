"""Structure-aware fuzzing: every example manifest, parsed, then changed at one node (a
key deleted, a value of the wrong type, out of range, an unknown key, a huge string, a deep
structure, a wrong enum, a bad duration, a bad `each`). The loader answers a Plan or a
ManifestError whose every problem is located, never another exception, in well under a
second and a bounded amount of memory."""

from __future__ import annotations

import copy
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import ManifestError, Problem
from runner.manifest import schemas
from runner.manifest.loader import parse_manifest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "manifests").glob("*.yaml"))
ENV = dict.fromkeys(
    ("BULKGRID_API_KEY", "LOBSTR_API_KEY", "SPIDRA_API_KEY", "SKOP_API_KEY", "PULSE_API_KEY"), "k"
)
# A hang guard, not a speed target (typical cases take ~10 ms; speed lives in `make bench`):
# only a case that explodes, as the ones fixed below did, comes near it.
HANG_GUARD = 30.0
PEAK_BYTES = 64 * 1024 * 1024
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's when present: MiB-long cases

Path_ = tuple[str | int, ...]


def nodes(value: Any, path: Path_ = ()) -> Iterator[Path_]:
    """The path of every node under `value` (itself included), depth first."""
    yield path
    if isinstance(value, dict):
        for key, child in value.items():
            yield from nodes(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from nodes(child, (*path, index))


def deep(levels: int) -> Any:
    value: Any = "bottom"
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    return value


WRONG_TYPES: list[Any] = [None, True, 0, -1, 1.5, "", "x", [], {}, [1, "a"], {"a": 1}]
OUT_OF_RANGE: list[Any] = [-1, 0, -0.5, 1e-9, 2**63, -(2**63), 10**30, 1e308, 0.0001]
WRONG_ENUMS = ["bogus", "DETACH", "Cancel", "scrape ", "PULSE", "Failed", "json5"]
BAD_DURATIONS = ["", "1", "1x", "-1s", "0s", "1 s", "s", "1.5.5s", "99999999999999999999d"]
BAD_DURATIONS += ["1e9d", "1e400s", "nan", "inf", "١s", "0x10s", "1_000s", "1ms1s"]
BAD_EACH: list[Any] = [
    None,
    [],
    {},
    "data/invoices.txt",
    5,
    [[1, 2]],
    [{"a": {"b": 1}}],
    [None, None],
    list(range(50)),
    {"file": ""},
    {"file": None},
    {"file": "data"},
    {"file": "data/missing.txt"},
    {"file": "../../../../../../etc/passwd"},
    {"file": "/dev/null"},
    {"file": "data/invoices.txt", "format": "xml"},
    {"file": "data/invoices.txt", "format": 3},
    {"file": "data/invoices.txt", "extra": 1},
    {"file": ["data/invoices.txt"]},
]
HUGE = "x" * 200_000
MUTATIONS: dict[str, list[Any]] = {
    "wrong type": WRONG_TYPES,
    "out of range": OUT_OF_RANGE,
    "wrong enum": WRONG_ENUMS,
    "bad duration": BAD_DURATIONS,
    "bad each": BAD_EACH,
    "huge string": [HUGE, "é" * 50_000, "{item}" * 20_000, "${" + "A" * 10_000 + "}"],
    "deep structure": [deep(30), deep(70), deep(200)],
}


def mutated(document: Any, path: Path_, kind: str, value: Any) -> Any:
    """A copy of `document` with the node at `path` deleted ("delete"), given an unknown key
    ("unknown key"), or replaced by `value`."""
    result = copy.deepcopy(document)
    if not path:
        return value if kind not in ("delete", "unknown key") else result
    parent = result
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if kind == "delete":
        del parent[last]
    elif kind == "unknown key":
        target = parent[last]
        if isinstance(target, dict):
            target[value] = 1
        else:
            parent[last] = {value: target}
    else:
        parent[last] = value
    return result


def load(example: Path, document: Any) -> None:
    """Parse `document` as if it were `example` (its `each` files beside it); assert the
    answer is a Plan or located problems, in bounded time and memory."""
    data = yaml.dump(document, Dumper=DUMPER, allow_unicode=True, sort_keys=False).encode()
    tracemalloc.start()
    started = time.perf_counter()
    problems: list[Problem] = []
    try:
        loaded = parse_manifest(data, source=example, env=ENV)
    except ManifestError as exc:
        problems = exc.problems
        assert problems, "a ManifestError always carries a problem"
    else:
        assert loaded.plan.jobs
    finally:
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    for problem in problems:
        assert problem.file
        assert problem.line >= 1
        assert problem.column >= 1
        assert problem.message
    assert elapsed < HANG_GUARD
    assert peak < PEAK_BYTES


DOCUMENTS = {path: yaml.safe_load(path.read_bytes()) for path in EXAMPLES}
NODES = {path: list(nodes(document)) for path, document in DOCUMENTS.items()}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_valid_as_dumped(example: Path) -> None:
    """The mutations start from valid manifests: a finding is the mutation's doing."""
    data = yaml.safe_dump(DOCUMENTS[example], allow_unicode=True, sort_keys=False).encode()
    assert parse_manifest(data, source=example, env=ENV).plan.jobs


@st.composite
def mutations(draw: st.DrawFn) -> tuple[Path, Path_, str, Any]:
    example = draw(st.sampled_from(EXAMPLES))
    path = draw(st.sampled_from(NODES[example]))
    kind = draw(st.sampled_from(["delete", "unknown key", *MUTATIONS]))
    if kind == "unknown key":
        value: Any = draw(st.sampled_from(["timout", "zzz", "", "id ", "é", HUGE[:300]]))
    elif kind == "delete":
        value = None
    else:
        value = draw(st.sampled_from(MUTATIONS[kind]))
    return example, path, kind, value


@settings(
    max_examples=300,
    deadline=None,  # the hang guard and the memory bound are asserted in `load`
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutations())
def test_one_field_mutated_gives_a_plan_or_located_problems(
    case: tuple[Path, Path_, str, Any],
) -> None:
    example, path, kind, value = case
    load(example, mutated(DOCUMENTS[example], path, kind, value))


def test_a_megabytes_long_value_of_an_enum_is_answered_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by the sweep: the 'did you mean' hint ran difflib over the whole value
    (seconds for a few MiB, again for every failing `each` item). Proven by what difflib is
    asked, not by a stopwatch."""
    asked: list[int] = []
    real = schemas.difflib.get_close_matches

    def spy(word: str, *args: Any, **kwargs: Any) -> list[str]:
        asked.append(len(word))
        return real(word, *args, **kwargs)

    monkeypatch.setattr(schemas.difflib, "get_close_matches", spy)
    example = ROOT / "manifests" / "pulse.yaml"
    document = mutated(DOCUMENTS[example], ("jobs", 0, "params", "model"), "", "x" * 4_000_000)
    load(example, document)
    assert max(asked, default=0) < 1_000


def _each_manifest(tmp_path: Path, job_id: str, params: dict[str, Any], items: int) -> Path:
    (tmp_path / "items.txt").write_text("".join(f"item-{i}\n" for i in range(items)))
    document = {
        "version": 1,
        "name": "amplified",
        "providers": {"pulse": {"api_key": "${PULSE_API_KEY}"}},
        "jobs": [
            {
                "id": job_id,
                "provider": "pulse",
                "type": "extract",
                "each": {"file": "items.txt"},
                "params": params,
            }
        ],
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.dump(document, Dumper=DUMPER, sort_keys=False))
    return path


def _problems(path: Path) -> list[str]:
    data = path.read_bytes()
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, source=path, env=ENV)
    return [p.render().removeprefix(f"{path.parent}/") for p in info.value.problems]


def test_an_overlong_id_template_is_not_expanded(tmp_path: Path) -> None:
    """Found by the sweep: the schema said the id was too long, then 600,000 `{item}`s were
    expanded for every item anyway (seconds)."""
    path = _each_manifest(tmp_path, "{item}" * 600_000, {"file_url": "{item}"}, items=4)
    problems = _problems(path)
    assert len(problems) == 1
    assert problems[0].startswith("m.yaml:7:7: jobs[0] (id: {item}{item}")
    assert problems[0].endswith(
        ").id: '{item}{item}{item}{item}{item}{item}{item}{item}{item}"
        "{...' is too long (3600000 characters; at most 128)"
    )


def test_a_template_with_too_many_placeholders_is_refused_before_expanding(
    tmp_path: Path,
) -> None:
    """Found by the sweep: 600,000 placeholders in params were filled for every item."""
    path = _each_manifest(tmp_path, "d-{n}", {"file_url": "{item}" * 600_000}, items=4)
    assert _problems(path) == [
        "m.yaml:13:5: jobs[0] (id: d-{n}).params: 600,001 placeholders; a job's id and "
        "params may use at most 1,000 (repeat the data in the `each` items instead)",
    ]


def test_expanding_each_stops_at_a_bounded_size(tmp_path: Path) -> None:
    """A 4 MB string with one placeholder, times 100,000 items, would be 400 GB; the cap
    stops it after 256 MiB, in a few seconds (the bound, not a speed target)."""
    params = {"file_url": "https://x.example/{item}", "model": "x" * 4_000_000 + "{n}"}
    path = _each_manifest(tmp_path, "d-{n}", params, items=100_000)
    tracemalloc.start()
    try:
        problems = _problems(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problems[-1] == (
        "items.txt:68:1: jobs[0] (id: d-{n}).each: expanding `each` up to this item makes "
        "more than 268,435,456 characters of ids and params; a job may make at most that "
        "many (use fewer or shorter placeholders, or split the items)"
    )
    assert peak < 600 * 1024 * 1024
