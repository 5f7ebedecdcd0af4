"""`each:` items (a list, or a text / JSON Lines / CSV file) and the `{placeholder}` templates
they fill in a job's id and params.

Templates are compiled once per job, so expanding 100,000 items costs a few microseconds
each; parts of params without placeholders are shared between the expanded jobs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from runner.errors import EachError

MAX_ITEMS = 1_000_000  # per `each` file or list
MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_ID_LENGTH = 128
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_-]*)\}")
_NOT_SLUG = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class Item:
    """One `each` value and where it came from."""

    value: Any  # a scalar ({item}) or a mapping of fields ({column})
    file: str
    line: int
    column: int = 1

    def fields(self, n: int) -> dict[str, Any]:
        if isinstance(self.value, dict):
            return {**self.value, "n": n}
        return {"item": self.value, "n": n}


@dataclass(frozen=True, slots=True)
class EachFile:
    """An `each` file the manifest read: as written, where it was read, and the sha256 of
    exactly the bytes its items came from (what the batch must copy)."""

    written: str  # the `file:` value, relative to the manifest
    path: Path  # the file opened
    sha256: str


Opener = Callable[[Path], IO[bytes]]
Resolver = Callable[[str], Path]  # an `each` file as written -> the file to open


def open_file(path: Path) -> IO[bytes]:
    """The default opener (tests pass their own)."""
    return path.open("rb")


def guess_format(path: str) -> str:
    return FORMATS.get(Path(path).suffix.lower(), "text")


def read_items(
    path: Path,
    display: str,
    fmt: str,
    opener: Opener = open_file,
    on_bytes: Callable[[bytes], None] | None = None,
) -> list[Item]:
    """Every item of an each file. EachError with line 0 is about the file as a whole.
    `on_bytes` sees every byte read, in order (to hash what the items came from)."""
    try:
        handle = opener(path)
    except FileNotFoundError:
        raise EachError(display, 0, 0, "no such file") from None
    except IsADirectoryError:
        raise EachError(display, 0, 0, "is a directory, not a file") from None
    except OSError as exc:
        raise EachError(display, 0, 0, f"cannot read it: {exc.strerror or exc}") from None
    with handle:
        try:
            size = os.fstat(handle.fileno()).st_size
        except (OSError, io.UnsupportedOperation):
            size = 0
        if size > MAX_FILE_BYTES:
            raise EachError(
                display, 0, 0, f"{size:,} bytes is too big (at most {MAX_FILE_BYTES:,})"
            )
        lines = _lines(handle, display, on_bytes)
        if fmt == "csv":
            items = _csv_items(lines, display)
        elif fmt == "jsonl":
            items = _jsonl_items(lines, display)
        else:
            items = (Item(t.strip(), display, number) for number, t in lines if t.strip())
        result: list[Item] = []
        for item in items:
            if len(result) >= MAX_ITEMS:
                raise EachError(
                    display, item.line, 1, f"more than {MAX_ITEMS:,} items; split the batch"
                )
            result.append(item)
    if not result:
        raise EachError(display, 0, 0, "has no items")
    return result


def _lines(
    handle: IO[bytes], display: str, on_bytes: Callable[[bytes], None] | None = None
) -> Iterator[tuple[int, str]]:
    for number, raw in enumerate(handle, start=1):
        if on_bytes is not None:
            on_bytes(raw)
        if b"\x00" in raw:
            raise EachError(display, number, raw.index(b"\x00") + 1, "binary file (NUL byte)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EachError(display, number, exc.start + 1, "not UTF-8 text") from None
        if number == 1:
            text = text.removeprefix("\ufeff")
        yield number, text.rstrip("\r\n")


def _jsonl_items(lines: Iterator[tuple[int, str]], display: str) -> Iterator[Item]:
    for number, text in lines:
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EachError(display, number, exc.colno, f"invalid JSON: {exc.msg}") from None
        if isinstance(value, list) or value is None:
            raise EachError(display, number, 1, "a JSON Lines item must be an object or a scalar")
        yield Item(value, display, number)


def _csv_items(lines: Iterator[tuple[int, str]], display: str) -> Iterator[Item]:
    # Feed the csv module line by line so that positions stay exact; quoted newlines work
    # because the reader pulls further lines from the iterator when a field is open.
    numbers: list[int] = [0]

    def texts() -> Iterator[str]:
        for number, text in lines:
            numbers[0] = number
            yield text + "\n"

    reader = csv.reader(texts())
    header: list[str] | None = None
    for row in reader:
        if header is None:
            header = [name.strip() for name in row]
            if not any(header):
                raise EachError(display, numbers[0], 1, "the CSV file needs a header row")
            continue
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise EachError(
                display,
                numbers[0],
                1,
                f"row has {len(row)} columns; the header has {len(header)}",
            )
        yield Item(dict(zip(header, row, strict=True)), display, numbers[0])


def items_from_list(values: list[Any], display: str, lines: list[tuple[int, int]]) -> list[Item]:
    return [Item(v, display, line, col) for v, (line, col) in zip(values, lines, strict=True)]


# -- templates ---------------------------------------------------------------------------------

Build = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class Template:
    build: Build  # fields -> value
    names: frozenset[str]  # placeholders used
    paths: Mapping[tuple[str | int, ...], frozenset[str]]  # strings with placeholders: names


def _parts(text: str) -> list[str | tuple[str]] | None:
    """Literal strings and (name,) placeholders; None when `text` has nothing to expand."""
    if "{" not in text and "}" not in text:
        return None
    parts: list[str | tuple[str]] = []
    last = 0
    found = False
    for match in _PLACEHOLDER.finditer(text):
        parts.append(text[last : match.start()])
        token = match.group(0)
        if token == "{{":
            parts.append("{")
        elif token == "}}":
            parts.append("}")
        else:
            parts.append((match.group(1),))
        last = match.end()
        found = True
    if not found:
        return None
    parts.append(text[last:])
    return [part for part in parts if part != ""]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if type(value) is int:  # {n}: the hot case when expanding many items
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def template_cost(value: Any) -> tuple[int, dict[str, int]]:
    """(characters of literal text in the strings of `value` that have placeholders, the
    number of times each placeholder is used): what filling it in costs, before doing it."""
    literal = 0
    uses: dict[str, int] = {}
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            parts = _parts(node)
            for part in parts or ():
                if isinstance(part, tuple):
                    uses[part[0]] = uses.get(part[0], 0) + 1
                else:
                    literal += len(part)
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return literal, uses


def field_size(value: Any) -> int:
    """Characters `value` takes when filled into a string."""
    return len(value) if isinstance(value, str) else len(_text(value))


def compile_template(value: Any) -> Template:
    """A builder of `value` with its placeholders filled; placeholder-free parts are shared."""
    names: set[str] = set()
    paths: dict[tuple[str | int, ...], frozenset[str]] = {}

    def walk(node: Any, path: tuple[str | int, ...]) -> Build | None:
        if isinstance(node, str):
            parts = _parts(node)
            if parts is None:
                return None
            used = [part[0] for part in parts if isinstance(part, tuple)]
            names.update(used)
            if used:
                paths[path] = frozenset(used)
            if len(parts) == 1 and isinstance(parts[0], tuple):
                name = parts[0][0]
                return lambda fields: fields[name]  # a lone placeholder keeps its JSON type
            frozen = tuple(parts)
            return lambda fields: "".join(
                p if isinstance(p, str) else _text(fields[p[0]]) for p in frozen
            )
        if isinstance(node, dict):
            builders = {k: b for k, v in node.items() if (b := walk(v, (*path, k))) is not None}
            if not builders:
                return None
            base = dict(node)
            return lambda fields: {**base, **{k: b(fields) for k, b in builders.items()}}
        if isinstance(node, list):
            items = [walk(v, (*path, i)) for i, v in enumerate(node)]
            if not any(items):
                return None
            pairs = list(zip(node, items, strict=True))
            return lambda fields: [b(fields) if b is not None else v for v, b in pairs]
        return None

    builder = walk(value, ())
    build: Build = builder if builder is not None else (lambda fields: value)
    return Template(build, frozenset(names), paths)


def compile_id(text: str) -> tuple[Callable[[Mapping[str, Any]], str], frozenset[str]]:
    """An id builder: substituted values are reduced to slugs; long ids get a stable hash."""
    parts = _parts(text)
    if parts is None:
        return (lambda fields: text), frozenset()
    frozen = tuple(parts)
    names = frozenset(p[0] for p in frozen if isinstance(p, tuple))

    def build(fields: Mapping[str, Any]) -> str:
        out = "".join(p if isinstance(p, str) else slug(_text(fields[p[0]])) for p in frozen)
        return shorten(out)

    return build, names


def slug(text: str) -> str:
    return _NOT_SLUG.sub("-", text.lower()).strip("-")


def shorten(job_id: str) -> str:
    """Ids longer than MAX_ID_LENGTH keep a prefix and gain a stable hash of the whole."""
    if len(job_id) <= MAX_ID_LENGTH:
        return job_id
    digest = hashlib.sha256(job_id.encode("utf-8")).hexdigest()[:10]
    return f"{job_id[: MAX_ID_LENGTH - 11].rstrip('-')}-{digest}"
