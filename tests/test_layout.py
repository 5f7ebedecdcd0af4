"""The package reads as its layout promises: every module opens with a docstring whose first
paragraph says in one to three lines what lives there."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import runner

MODULES = sorted(Path(runner.__file__).parent.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(p.parents[2])))
def test_every_module_says_what_lives_there_in_one_to_three_lines(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text("utf-8")))
    assert doc, f"{path} has no module docstring"
    first = doc.split("\n\n")[0]
    assert 1 <= len(first.splitlines()) <= 3, f"{path}: {len(first.splitlines())} lines"


def test_the_flow_has_its_subpackages() -> None:
    root = Path(runner.__file__).parent
    for package in ("manifest", "engine", "providers", "http", "store", "batch", "commands"):
        assert (root / package / "__init__.py").is_file(), package
    flat = sorted(p.stem for p in root.glob("*.py"))
    assert flat == [
        "__init__",
        "__main__",
        "cli",
        "durations",
        "errors",
        "estimate",
        "exits",
        "fingerprint",
        "lifecycle",
        "plan",
        "remote",
    ]
