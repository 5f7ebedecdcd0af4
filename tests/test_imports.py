"""The import graph of runner/: no cycles, and no arrow that runs back up the layers.

Every `import` counts, wherever it stands: at the top, inside a function, or under
`TYPE_CHECKING` (a type-only import is still an arrow a reader has to follow). Importing
`a.b.c` also runs the packages `a` and `a.b` first, so those arrows count too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import runner

ROOT = Path(runner.__file__).parent
PACKAGE = "runner"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _parents(name: str) -> Iterator[str]:
    parts = name.split(".")
    for end in range(1, len(parts)):
        yield ".".join(parts[:end])


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The runner modules `name` imports, by any kind of import statement, anywhere."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                if not is_package:
                    anchor.pop()
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            # `from pkg import mod` imports the module pkg.mod
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    found = {t for t in targets if t in known}
    found |= {parent for t in found for parent in _parents(t)}
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imported(name, path, known) for name, path in mods.items()}


def strongly_connected(edges: dict[str, set[str]]) -> list[frozenset[str]]:
    """Tarjan's algorithm, iterative: every group of modules that reach one another."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[frozenset[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group: set[str] = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(frozenset(group))
    return groups


def a_cycle(group: frozenset[str], edges: dict[str, set[str]]) -> list[str]:
    """One concrete loop through `group`, for the failure message: a -> b -> ... -> a."""
    start = min(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for child in sorted(edges[node] & group):
            if child == start:
                return [*paths[node], start]
            if child not in paths:
                paths[child] = [*paths[node], child]
                todo.append(child)
    return sorted(group)


def cycles() -> list[frozenset[str]]:
    return strongly_connected(graph())


def test_no_import_cycles() -> None:
    edges = graph()
    found = cycles()
    shown = "\n".join(" -> ".join(a_cycle(g, edges)) for g in found)
    assert not found, f"import cycles in runner/:\n{shown}"


def _in(name: str, layer: str) -> bool:
    return name == layer or name.startswith(layer + ".")


# (importer, imported): no module under the first may import any module under the second.
# Each is an arrow that would run back up: a lower layer reaching for one that uses it.
FORBIDDEN = [
    # the bottom: everyone may use these, they use nothing of runner
    ("runner.errors", "runner"),
    ("runner.remote", "runner"),  # plain values the lifecycle, store and adapters share
    ("runner.store.redaction", "runner"),
    ("runner.store.jsonio", "runner"),
    # the data model: the lifecycle holds remote data, it drives nothing
    *[
        ("runner.lifecycle", high)
        for high in (
            "runner.providers",
            "runner.engine",
            "runner.http",
            "runner.store",
            "runner.batch",
            "runner.manifest",
        )
    ],
    # manifest -> plan: reads files and schemas, runs nothing
    *[
        ("runner.manifest", high)
        for high in (
            "runner.engine",
            "runner.http",
            "runner.store",
            "runner.batch",
            "runner.commands",
            "runner.sandbox",
        )
    ],
    # providers know the wire, not who calls them (they get a ProviderHttp passed in)
    *[
        ("runner.providers", high)
        for high in (
            "runner.engine",
            "runner.http",
            "runner.store",
            "runner.batch",
            "runner.commands",
            "runner.sandbox",
            "runner.manifest",
        )
    ],
    # http is below the engine that drives it and beside the store (only its leaf helpers)
    *[
        ("runner.http", high)
        for high in (
            "runner.engine",
            "runner.batch",
            "runner.commands",
            "runner.store.results",
            "runner.store.journal",
            "runner.store.log",
            "runner.store.lock",
        )
    ],
    # the engine drives providers over http and writes through protocols, not the store
    *[
        ("runner.engine", high)
        for high in (
            "runner.batch",
            "runner.commands",
            "runner.sandbox",
            "runner.manifest",
            "runner.store",
        )
    ],
    # the store keeps what it is given
    *[
        ("runner.store", high)
        for high in (
            "runner.engine",
            "runner.http",
            "runner.providers",
            "runner.manifest",
            "runner.batch",
            "runner.commands",
            "runner.sandbox",
        )
    ],
    # the sandbox is a server beside the providers: it never runs batches
    *[
        ("runner.sandbox", high)
        for high in (
            "runner.engine",
            "runner.http",
            "runner.batch",
            "runner.commands",
            "runner.manifest",
        )
    ],
    ("runner.batch", "runner.commands"),  # commands sit on top of the batch wiring
    # the report reads a batch directory back: it runs nothing and sends nothing
    *[
        ("runner.report", high)
        for high in ("runner.engine", "runner.http", "runner.batch", "runner.commands")
    ],
    ("runner.estimate", "runner.providers.lobstr"),  # estimates come from the registry
]


def test_no_arrow_runs_back_up() -> None:
    edges = graph()
    wrong = sorted(
        f"{importer} imports {target}"
        for importer, targets in edges.items()
        for target in targets
        for low, high in FORBIDDEN
        if _in(importer, low) and _in(target, high) and not _in(target, low)
    )
    assert not wrong, "imports that run back up:\n" + "\n".join(wrong)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The checker itself: function-level, TYPE_CHECKING, relative and `from pkg import
    mod` imports are arrows; a name imported from a module is not an arrow to a module."""
    source = tmp_path / "runner" / "pkg" / "mod.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from runner.a import Thing\n"
        "def f():\n"
        "    import runner.b\n"
        "from . import sibling\n"
        "from .other import name\n"
        "from runner import c\n",
        encoding="utf-8",
    )
    known = {
        "runner",
        "runner.a",
        "runner.b",
        "runner.c",
        "runner.pkg",
        "runner.pkg.sibling",
        "runner.pkg.other",
        "runner.pkg.mod",
    }
    found = imported("runner.pkg.mod", source, known)
    assert found == {
        "runner",
        "runner.a",
        "runner.b",
        "runner.c",
        "runner.pkg",
        "runner.pkg.sibling",
        "runner.pkg.other",
    }


def test_a_cycle_is_found_and_shown() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    groups = strongly_connected(edges)
    assert groups == [frozenset({"a", "b", "c"})]
    assert a_cycle(groups[0], edges) == ["a", "b", "c", "a"]
