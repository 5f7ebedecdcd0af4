"""File names from provider data: never escape, never hidden, bounded, unique."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.store.sanitize import MAX_BYTES, safe_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", "file"),
        (".", "file"),
        ("", "file"),
        (".bashrc", "bashrc"),
        ("...hidden.txt", "hidden.txt"),
        ("a\\b:c*d?.txt", "a_b_c_d_.txt"),
        ("line\nbreak\x00.csv", "line_break_.csv"),
        ("trailing dots. . .", "trailing dots"),
        ("CON.txt", "_CON.txt"),
        ("naïve café.PDF", "naïve café.PDF"),
        ("archive.tar.gz", "archive.tar.gz"),
        (".pdf", "pdf"),
    ],
)
def test_examples(name: str, expected: str) -> None:
    assert safe_name(name, set()) == expected


def test_collisions_are_numbered_case_insensitively() -> None:
    taken: set[str] = set()
    names = [safe_name(n, taken) for n in ("a.pdf", "a.pdf", "A.PDF", "a-2.pdf", "b")]
    assert names == ["a.pdf", "a-2.pdf", "A-3.PDF", "a-2-2.pdf", "b"]
    assert taken == {"a.pdf", "a-2.pdf", "a-3.pdf", "a-2-2.pdf", "b"}


def test_long_names_keep_their_extension_and_stay_bounded() -> None:
    taken: set[str] = set()
    first = safe_name("é" * 200 + ".json", taken)
    second = safe_name("é" * 200 + ".json", taken)
    assert first.endswith(".json")
    assert second.endswith("-2.json")
    assert len(first.encode()) <= MAX_BYTES
    assert len(second.encode()) <= MAX_BYTES
    assert first != second


def test_a_long_suffix_is_not_taken_for_an_extension() -> None:
    name = safe_name("x." + "y" * 300, set())
    assert len(name.encode()) <= MAX_BYTES
    assert name.startswith("x.yyy")


@given(st.lists(st.text(max_size=300), min_size=1, max_size=20))
def test_names_never_escape_and_are_unique(names: list[str]) -> None:
    base = Path("/srv/batch/jobs/j/files")
    taken: set[str] = set()
    results = [safe_name(n, taken) for n in names]
    assert len({r.casefold() for r in results}) == len(results)
    for result in results:
        assert result
        assert not result.startswith(".")
        assert not set(result) & {"/", "\\", "\x00"}
        assert result not in {".", ".."}
        assert len(result.encode("utf-8")) <= MAX_BYTES
        assert all(ch.isprintable() or ch == " " for ch in result)
        path = base / result
        assert path.parent == base
        assert Path(*path.parts).resolve(strict=False).parent == base.resolve(strict=False)
