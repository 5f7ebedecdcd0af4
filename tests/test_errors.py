"""The error tree drawn in runner/errors.py is the tree defined there, and every class in it
is raised somewhere in runner/ (an error nobody raises is not part of the contract)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import runner
from runner import errors
from runner.errors import ErrorKind, ProviderCallError

ROOT = Path(runner.__file__).parent
_LINE = re.compile(r"^( *)([A-Z][A-Za-z]*Error)\b")


def drawn_tree() -> dict[str, str]:
    """class name -> its parent's name, as the module docstring draws it."""
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        depth, name = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else "Exception"
        stack.append((depth, name))
    return parents


def defined_tree() -> dict[str, str]:
    """class name -> its base's name, for every exception class runner.errors defines."""
    return {
        name: cls.__bases__[0].__name__
        for name, cls in vars(errors).items()
        if inspect.isclass(cls)
        and issubclass(cls, BaseException)
        and cls.__module__ == errors.__name__
    }


def test_the_docstring_draws_exactly_the_tree_defined() -> None:
    assert drawn_tree() == defined_tree()


def test_every_exception_runner_defines_lives_in_errors() -> None:
    elsewhere = sorted(
        f"{path.relative_to(ROOT.parent)}: {node.name}"
        for path in ROOT.rglob("*.py")
        if path != ROOT / "errors.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ClassDef)
        and any(
            isinstance(base, ast.Name) and base.id.endswith(("Error", "Exception"))
            for base in node.bases
        )
    )
    assert elsewhere == []


def constructed_in_runner() -> set[str]:
    """Names called as `Name(...)` anywhere in runner/ but errors.py (raised, or built to be
    raised by the caller, as `store_error` and the client's `_error` do)."""
    return {
        node.func.id
        for path in ROOT.rglob("*.py")
        if path != ROOT / "errors.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }


def test_every_error_in_the_tree_is_raised() -> None:
    """A class is raised in runner/, or is the base of one that is: none is dead."""
    built = {errors.store_error.__name__: "StoreError"}  # errors' own factory of StoreError
    raised = {built.get(name, name) for name in constructed_in_runner()} & set(defined_tree())
    dead = sorted(
        name
        for name in defined_tree()
        if not any(issubclass(getattr(errors, r), getattr(errors, name)) for r in raised)
    )
    assert dead == []


def test_a_copy_marked_not_accepted_keeps_everything_else() -> None:
    original = ProviderCallError(
        "lobstr job a: POST squids: HTTP 502: bad gateway",
        provider="lobstr",
        job_id="a",
        kind=ErrorKind.TRANSIENT,
        status_code=502,
        code="BadGateway",
        retry_after=3.0,
        network=None,
        offsite=False,
    )
    marked = original.as_not_accepted()
    assert not original.not_accepted
    assert marked.not_accepted
    assert str(marked) == str(original)
    kept = (
        "provider",
        "job_id",
        "kind",
        "status_code",
        "code",
        "retry_after",
        "network",
        "offsite",
    )
    assert {k: getattr(marked, k) for k in kept} == {k: getattr(original, k) for k in kept}
