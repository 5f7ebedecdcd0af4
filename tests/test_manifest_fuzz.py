"""Property: whatever bytes or YAML arrive, the loader answers a Plan or a ManifestError,
never another exception, and quickly (hypothesis deadline)."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.errors import ManifestError, Problem
from runner.manifest.loader import parse_manifest

ENV = {"PULSE_API_KEY": "k", "SPIDRA_API_KEY": "k"}
FAST = settings(
    max_examples=200, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow]
)


def opener(path: Path) -> IO[bytes]:
    if path.name == "items.txt":
        return io.BytesIO(b"https://x.example/a\nnot a url\n")
    raise FileNotFoundError(path)


def check(data: bytes) -> None:
    problems: list[Problem] = []
    try:
        loaded = parse_manifest(data, source=Path("f.yaml"), env=ENV, opener=opener)
    except ManifestError as exc:
        problems = exc.problems
        assert problems, "a ManifestError always carries a problem"
    else:
        assert loaded.plan.jobs
    for problem in problems:
        assert problem.line >= 1
        assert problem.column >= 1
        assert problem.message


@FAST
@given(st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    check(text.encode("utf-8", errors="surrogatepass"))


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes) -> None:
    check(data)


# Text assembled from YAML's own punctuation finds parser corners faster than random text.
TOKENS = st.sampled_from(
    [
        "version: 1\n",
        "name: x\n",
        "jobs:\n",
        "  - ",
        "id: a",
        "provider: pulse",
        "&a ",
        "*a",
        "<<: ",
        "{",
        "}",
        "[",
        "]",
        ", ",
        ": ",
        "- ",
        "\n",
        "  ",
        "'",
        '"',
        "!!str ",
        "!x ",
        "? ",
        "|\n",
        ">\n",
        "#",
        "---\n",
        "...\n",
        "%YAML 1.1\n",
        "\t",
        "\\",
        "${PULSE_API_KEY}",
        "each: {file: items.txt}",
        "params: {file_url: '{item}'}",
        "1e999",
        ".nan",
        "0x1F",
    ]
)


@FAST
@given(st.lists(TOKENS, max_size=40))
def test_yaml_shaped_text(tokens: list[str]) -> None:
    check("".join(tokens).encode())


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["1s", "pulse", "spidra", "extract", "scrape", "{n}", "{item}", "${X}"]),
)
KEYS = st.one_of(
    st.text(max_size=8),
    st.sampled_from(
        [
            "version",
            "name",
            "jobs",
            "providers",
            "defaults",
            "id",
            "provider",
            "type",
            "params",
            "each",
            "timeout",
            "poll",
            "limits",
            "api_key",
            "urls",
            "file_url",
            "file",
            "requests",
            "rate",
            "per",
            "initial",
            "max",
            "fetch",
            "retry",
            "tags",
        ]
    ),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=30,
)


@FAST
@given(VALUES)
def test_arbitrary_yaml_structures(value: Any) -> None:
    check(yaml.safe_dump(value, allow_unicode=True).encode())


MANIFESTS = st.fixed_dictionaries(
    {
        "version": st.sampled_from([1, 2, "1"]),
        "name": st.sampled_from(["ok", "Bad Name", 3]),
        "providers": st.dictionaries(
            st.sampled_from(["pulse", "spidra", "spidr"]),
            st.fixed_dictionaries({"api_key": st.sampled_from(["${PULSE_API_KEY}", "${NOPE}", 1])}),
            max_size=3,
        ),
        "jobs": st.lists(
            st.dictionaries(
                st.sampled_from(
                    [
                        "id",
                        "provider",
                        "type",
                        "params",
                        "each",
                        "timeout",
                        "poll",
                        "fetch",
                        "retry",
                    ]
                ),
                VALUES,
                max_size=7,
            ),
            max_size=4,
        ),
    }
)


@FAST
@given(MANIFESTS)
def test_manifest_shaped_structures(value: Any) -> None:
    check(yaml.safe_dump(value, allow_unicode=True).encode())
