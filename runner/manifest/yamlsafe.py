"""YAML with a position for every node, and limits that keep hostile input cheap.

Events come from libyaml (CSafeLoader's parser, SafeLoader's as a fallback); one iterative
pass turns them into plain JSON-like values plus a parallel tree of positions, enforcing
caps on depth, nodes and alias expansion so that no input costs unbounded time or memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from runner.errors import YamlError

MAX_DEPTH = 64  # nesting levels; a manifest needs about 10
MAX_NODES = 500_000  # values in the document, aliases expanded (~2 s to hit; big lists: each files)
MAX_ALIAS_NODES = 100_000  # values produced by expanding aliases ("billion laughs" stops here)

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()
_TAG = "tag:yaml.org,2002:"
MERGE_KEY = "<<"


@dataclass(slots=True)
class Pos:
    """Where a value is (1-based), where its key is (for mapping values), and its children."""

    line: int
    column: int
    key_line: int = 0
    key_column: int = 0
    children: dict[Any, Pos] | list[Pos] | None = None

    def child(self, key: str | int) -> Pos | None:
        kids = self.children
        if isinstance(kids, dict):
            return kids.get(key)
        if isinstance(kids, list) and isinstance(key, int) and 0 <= key < len(kids):
            return kids[key]
        return None


@dataclass(frozen=True, slots=True)
class Warning_:
    """A non-fatal problem found while reading (duplicate keys and the like)."""

    line: int
    column: int
    path: tuple[str | int, ...]
    message: str


@dataclass(slots=True)
class Document:
    value: Any
    pos: Pos
    warnings: list[Warning_] = field(default_factory=list)


@dataclass(slots=True)
class _Frame:
    kind: str  # "map" or "seq"
    value: Any
    pos: Pos
    path: tuple[str | int, ...]
    anchor: str | None
    start: int  # where its events begin on the tape (when anchored)
    key: Any = None
    key_pos: Pos | None = None
    have_key: bool = False
    merges: list[tuple[Any, Pos]] = field(default_factory=list)


def _where(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _scalar(event: ScalarEvent) -> Any:
    line, col = _where(event.start_mark)
    tag = event.tag
    if tag is None or tag == "!":
        tag = _RESOLVER.resolve(ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
    elif tag.startswith("!") and not tag.startswith("!!"):
        raise YamlError(line, col, f"unsupported YAML tag {tag!r}")
    name = tag[len(_TAG) :] if tag.startswith(_TAG) else tag
    marks: Any = (event.start_mark, event.end_mark)
    node = ScalarNode(tag, event.value, *marks)
    try:
        if name == "null":
            return None
        if name == "bool":
            return _CONSTRUCTOR.construct_yaml_bool(node)
        if name == "int":
            return _CONSTRUCTOR.construct_yaml_int(node)
        if name == "float":
            value = _CONSTRUCTOR.construct_yaml_float(node)
            if value != value or value in (float("inf"), float("-inf")):
                raise YamlError(line, col, f"{event.value!r} is not a finite number")
            return value
        if name in ("str", "timestamp", "binary", "merge", "value"):
            return event.value  # dates stay text: the manifest is JSON-shaped
    except (ConstructorError, ValueError) as exc:
        raise YamlError(line, col, f"{event.value!r} is not a valid {name}") from exc
    raise YamlError(line, col, f"unsupported YAML tag {event.tag or tag!r}")


class _Builder:
    """Turns an event stream into values + positions, iteratively, with caps."""

    def __init__(self) -> None:
        self.stack: list[_Frame] = []
        # Events under an anchor are kept once, on one tape, however deeply anchors nest;
        # an anchor is a slice of it, which an alias replays.
        self.tape: list[Event] = []
        self.anchors: dict[str, tuple[int, int]] = {}
        self.recording = 0  # anchored collections open
        self.nodes = 0
        self.alias_nodes = 0
        self.alias_depth = 0  # > 0 while replaying an alias
        self.alias_at = (1, 1)  # the outermost alias being replayed, for messages
        self.warnings: list[Warning_] = []
        self.root: tuple[Any, Pos] | None = None

    def feed(self, event: Event) -> None:
        anchored = getattr(event, "anchor", None) is not None
        if anchored and isinstance(event, (MappingStartEvent, SequenceStartEvent)):
            self.recording += 1
        if (self.recording or anchored) and not isinstance(event, AliasEvent):
            self.tape.append(event)
        if isinstance(event, AliasEvent):
            self._alias(event)
        elif isinstance(event, ScalarEvent):
            line, col = _where(event.start_mark)
            self._count(line, col)
            self._add(_scalar(event), Pos(line, col))
            if event.anchor is not None:
                self.anchors[event.anchor] = (len(self.tape) - 1, len(self.tape))
        elif isinstance(event, (MappingStartEvent, SequenceStartEvent)):
            self._open(event)
        elif isinstance(event, (MappingEndEvent, SequenceEndEvent)):
            self._close()

    def _count(self, line: int, col: int) -> None:
        self.nodes += 1
        if self.alias_depth:
            self.alias_nodes += 1
            if self.alias_nodes > MAX_ALIAS_NODES:
                raise YamlError(
                    *self.alias_at,
                    f"aliases expand to more than {MAX_ALIAS_NODES:,} values "
                    "(an alias bomb?); write the data out or use `each`",
                )
        if self.nodes > MAX_NODES:
            raise YamlError(line, col, f"the document has more than {MAX_NODES:,} values")

    def _open(self, event: MappingStartEvent | SequenceStartEvent) -> None:
        line, col = _where(event.start_mark)
        if event.tag is not None and event.tag not in (f"{_TAG}map", f"{_TAG}seq", "!"):
            raise YamlError(line, col, f"unsupported YAML tag {event.tag!r}")
        if len(self.stack) >= MAX_DEPTH:
            raise YamlError(line, col, f"nesting is deeper than {MAX_DEPTH} levels")
        self._count(line, col)
        is_map = isinstance(event, MappingStartEvent)
        parent = self.stack[-1] if self.stack else None
        path: tuple[str | int, ...] = ()
        if parent is not None:
            step: str | int = len(parent.value)
            if parent.kind == "map":
                step = parent.key if isinstance(parent.key, str) else ""
            path = (*parent.path, step)
        frame = _Frame(
            kind="map" if is_map else "seq",
            value={} if is_map else [],
            pos=Pos(line, col, children={} if is_map else []),
            path=path,
            anchor=event.anchor,
            start=len(self.tape) - 1,
        )
        self.stack.append(frame)

    def _close(self) -> None:
        frame = self.stack.pop()
        if frame.anchor is not None:
            self.recording -= 1
            self.anchors[frame.anchor] = (frame.start, len(self.tape))
        if frame.kind == "map" and frame.merges:
            self._merge(frame)
        self._add(frame.value, frame.pos)

    def _merge(self, frame: _Frame) -> None:
        for value, pos in frame.merges:
            sources = value if isinstance(value, list) else [value]
            kids = pos.children if isinstance(value, list) else [pos]
            for index, source in enumerate(sources):
                if not isinstance(source, dict):
                    raise YamlError(pos.line, pos.column, "'<<' merges only mappings")
                source_pos = kids[index] if isinstance(kids, list) else pos
                for key, item in source.items():
                    if key not in frame.value:
                        frame.value[key] = item
                        child = source_pos.child(key)
                        if child is not None and isinstance(frame.pos.children, dict):
                            frame.pos.children[key] = child

    def _alias(self, event: AliasEvent) -> None:
        line, col = _where(event.start_mark)
        recorded = self.anchors.get(event.anchor or "")
        if recorded is None:
            raise YamlError(line, col, f"unknown alias *{event.anchor}")
        if not self.alias_depth:
            self.alias_at = (line, col)
        self.alias_depth += 1
        try:
            for index in range(*recorded):  # the tape may grow meanwhile, never shrink
                replayed = self.tape[index]
                if isinstance(replayed, (MappingStartEvent, SequenceStartEvent, ScalarEvent)):
                    # the copy must not re-register the anchor or nest recordings
                    replayed = _without_anchor(replayed)
                self.feed(replayed)
        finally:
            self.alias_depth -= 1

    def _add(self, value: Any, pos: Pos) -> None:
        if not self.stack:
            self.root = (value, pos)
            return
        frame = self.stack[-1]
        if frame.kind == "seq":
            frame.value.append(value)
            assert isinstance(frame.pos.children, list)
            pos.key_line, pos.key_column = pos.line, pos.column
            frame.pos.children.append(pos)
            return
        if not frame.have_key:
            if not isinstance(value, str):
                raise YamlError(
                    pos.line, pos.column, f"mapping key {value!r} is not a string; quote it"
                )
            frame.key, frame.key_pos, frame.have_key = value, pos, True
            return
        key, key_pos = frame.key, frame.key_pos
        assert key_pos is not None
        frame.have_key, frame.key, frame.key_pos = False, None, None
        if key == MERGE_KEY:
            frame.merges.append((value, pos))
            return
        assert isinstance(frame.pos.children, dict)
        if key in frame.value:
            first = frame.pos.children[key]
            self.warnings.append(
                Warning_(
                    key_pos.line,
                    key_pos.column,
                    (*frame.path, key),
                    f"duplicate key {key!r} (first at line {first.key_line})",
                )
            )
            return
        pos.key_line, pos.key_column = key_pos.line, key_pos.column
        frame.value[key] = value
        frame.pos.children[key] = pos


def _without_anchor(event: Event) -> Event:
    copy = object.__new__(type(event))
    copy.__dict__.update(event.__dict__)
    copy.anchor = None  # type: ignore[attr-defined]
    return copy


def _events(text: str) -> Iterator[Event]:
    loader = _Loader(text)
    try:
        while loader.check_event():
            yield loader.get_event()
    finally:
        loader.dispose()


def load_yaml(text: str) -> Document:
    """Parse one YAML document into values and positions; YamlError on anything fatal."""
    builder = _Builder()
    documents = 0
    try:
        for event in _events(text):
            if isinstance(event, DocumentStartEvent):
                documents += 1
                if documents > 1:
                    line, col = _where(event.start_mark)
                    raise YamlError(line, col, "more than one YAML document; a manifest is one")
                continue
            builder.feed(event)
    except yaml.MarkedYAMLError as exc:
        line, col = _where(exc.problem_mark or exc.context_mark)
        # libyaml reads flow collections ahead of the events we count, so its own nesting
        # limit can fire first: our limit, our message, whatever the library does.
        deep = flow_too_deep(text, line)
        if deep is not None:
            raise YamlError(*deep, f"nesting is deeper than {MAX_DEPTH} levels") from exc
        detail = exc.problem or "invalid YAML"
        if exc.context:
            detail = f"{detail} ({exc.context})"
        raise YamlError(line, col, f"YAML syntax error: {detail}") from exc
    except yaml.reader.ReaderError as exc:
        line, col = _offset_position(text, exc.position)
        raise YamlError(line, col, f"not YAML text: {exc.reason}") from exc
    except yaml.YAMLError as exc:  # libyaml errors without a mark
        raise YamlError(1, 1, f"YAML syntax error: {exc}") from exc
    if builder.root is None:
        return Document(None, Pos(1, 1), builder.warnings)
    value, pos = builder.root
    return Document(value, pos, builder.warnings)


_BLOCK_SCALAR = re.compile(r"(?:^|[\s:-])[|>][-+0-9]*\s*(?:#.*)?$")


def flow_too_deep(text: str, last_line: int) -> tuple[int, int] | None:
    """Where flow collections (`[`, `{`) first nest deeper than MAX_DEPTH within the first
    `last_line` lines, or None. A lexical scan: quoted scalars, comments and block scalars
    are skipped, and outside a flow collection only a bracket that starts a value counts."""
    depth = 0
    block_indent: int | None = None  # inside a block scalar: lines indented more than this
    for number, line in enumerate(text.split("\n")[:last_line], start=1):
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if block_indent is not None:
            if not stripped.strip() or indent > block_indent:
                continue
            block_indent = None
        quote = ""
        column = 0
        while column < len(line):
            char = line[column]
            if quote:
                if char == "\\" and quote == '"':
                    column += 1
                elif char == quote:
                    if quote == "'" and line[column + 1 : column + 2] == "'":
                        column += 1
                    else:
                        quote = ""
            elif char == "#" and (column == 0 or line[column - 1] in " \t"):
                break
            elif char in "'\"" and (depth or _starts_value(line, column)):
                quote = char
            elif char in "[{" and (depth or _starts_value(line, column)):
                depth += 1
                if depth > MAX_DEPTH:
                    return number, column + 1
            elif char in "]}" and depth:
                depth -= 1
            column += 1
        if not depth and not quote and _BLOCK_SCALAR.search(line):
            block_indent = indent
    return None


def _starts_value(line: str, column: int) -> bool:
    """Can a node start at `column` of a block-context line?"""
    before = line[:column].rstrip(" ")
    return not before or (before.endswith(("-", ":", "?")) and column > len(before))


def _offset_position(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    line = before.count("\n") + 1
    return line, offset - (before.rfind("\n") + 1) + 1
