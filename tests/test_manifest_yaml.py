"""The positioned YAML reader and the `each` building blocks, unit by unit."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import pytest

from runner.errors import EachError, YamlError
from runner.manifest.each import compile_id, compile_template, read_items, shorten, slug
from runner.manifest.yamlsafe import (
    MAX_ALIAS_NODES,
    MAX_NODES,
    _Builder,
    _events,
    flow_too_deep,
    load_yaml,
)


def test_positions_of_values_and_keys_are_one_based() -> None:
    doc = load_yaml("a:\n  b: [1, {c: x}]\n")
    b = doc.pos.child("a").child("b")  # type: ignore[union-attr]
    assert (b.line, b.column, b.key_line, b.key_column) == (2, 6, 2, 3)  # type: ignore[union-attr]
    c = b.child(1).child("c")  # type: ignore[union-attr]
    assert (c.line, c.column) == (2, 14)  # type: ignore[union-attr]
    assert doc.value == {"a": {"b": [1, {"c": "x"}]}}


def test_scalars_stay_json_shaped() -> None:
    doc = load_yaml("d: 2026-01-02\nt: 2026-01-02T03:04:05Z\nh: 0x1F\ns: !!str 12\nn: ~\nb: yes\n")
    assert doc.value == {
        "d": "2026-01-02",
        "t": "2026-01-02T03:04:05Z",
        "h": 31,
        "s": "12",
        "n": None,
        "b": True,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: .nan\n", "'.nan' is not a finite number"),
        ("? [1, 2]\n: x\n", "mapping key [1, 2] is not a string; quote it"),
        ("a: *nowhere\n", "unknown alias *nowhere"),
        (
            "a: !!python/object:os.system x\n",
            "unsupported YAML tag 'tag:yaml.org,2002:python/object:os.system'",
        ),
        ("a: !!set {x}\n", "unsupported YAML tag 'tag:yaml.org,2002:set'"),
    ],
)
def test_unsafe_or_non_json_yaml_is_refused(text: str, message: str) -> None:
    with pytest.raises(YamlError) as caught:
        load_yaml(text)
    assert caught.value.message == message


def test_an_alias_bomb_stops_quickly() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefghi", "bcdefghij", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]")
    tracemalloc.start()
    try:
        with pytest.raises(YamlError) as caught:
            load_yaml("\n".join(lines) + "\n")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 * 1024  # stopped at the cap, not expanded (10^10 values)
    assert f"more than {MAX_ALIAS_NODES:,} values" in caught.value.message


def test_a_document_with_too_many_values_is_refused_where_it_crosses_the_cap() -> None:
    text = "big: [" + ", ".join(["1"] * (MAX_NODES + 10)) + "]\n"
    with pytest.raises(YamlError) as caught:
        load_yaml(text)
    assert caught.value.message == f"the document has more than {MAX_NODES:,} values"
    assert caught.value.line == 1


def test_nested_anchors_keep_each_event_once_and_aliases_replay_them() -> None:
    depth, width = 40, 50
    text = "".join(f"&a{i} [" for i in range(depth)) + ", ".join(["x"] * width)
    text = "doc: " + text + "]" * depth + "\ncopy: *a38\n"
    builder = _Builder()
    for event in _events(text):
        builder.feed(event)
    # one start and one end per level plus the scalars, not once per enclosing anchor
    taped = 2 * depth + width
    assert len(builder.tape) == taped  # the alias outside every anchor is not taped again
    assert builder.root is not None
    value = builder.root[0]
    a38 = value["doc"]
    for _ in range(38):
        a38 = a38[0]
    assert value["copy"] == a38 == [["x"] * width]


def test_deep_nesting_stops_at_the_cap() -> None:
    with pytest.raises(YamlError) as caught:
        load_yaml("[" * 100_000)
    assert caught.value.message == "nesting is deeper than 64 levels"
    assert (caught.value.line, caught.value.column) == (1, 65)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        # libyaml reads a run of flow openers ahead of the events and stops at its own
        # limit (1,000 levels) first; runner's cap and message still win.
        ("a: " + "[" * 2_000, (1, 68)),
        ("- " + "{" * 5_000, (1, 67)),
        ("a: b\nc: [[[[\n  " + "[" * 3_000, (3, 63)),
        ('x: \'[[[[\'\ny: "[[\\"["  # [[[\nz: ' + "[" * 2_000, (3, 68)),
    ],
)
def test_runners_depth_cap_speaks_before_the_librarys(text: str, where: tuple[int, int]) -> None:
    with pytest.raises(YamlError) as caught:
        load_yaml(text)
    assert caught.value.message == "nesting is deeper than 64 levels"
    assert (caught.value.line, caught.value.column) == where


@pytest.mark.parametrize(
    "text",
    [
        "p: |\n  " + "[" * 100 + "\nq: 1\n",  # inside a block scalar: text, not nesting
        "p: '" + "[" * 100 + "'\n",  # inside quotes
        "p: a" + "[" * 100 + "\n",  # inside a plain scalar
        "p: 1 # " + "[" * 100 + "\n",  # a comment
    ],
)
def test_brackets_that_are_text_are_not_nesting(text: str) -> None:
    assert flow_too_deep(text, text.count("\n") + 1) is None


def test_templates_fill_placeholders_and_keep_types() -> None:
    template = compile_template({"a": "{item}", "b": ["x-{n}", "{{literal}}"], "c": {"d": 1}})
    built = template.build({"item": 7, "n": 2})
    assert built == {"a": 7, "b": ["x-2", "{literal}"], "c": {"d": 1}}
    assert template.names == {"item", "n"}
    assert dict(template.paths) == {("a",): {"item"}, ("b", 0): {"n"}}


def test_ids_are_slugged_and_shortened_stably() -> None:
    build, names = compile_id("page-{item}")
    assert names == {"item"}
    assert build({"item": "https://A.example/x y"}) == "page-https-a.example-x-y"
    assert slug("--Hello, World!--") == "hello-world"
    long = "x" * 200
    assert len(shorten(long)) == 128
    assert shorten(long) == shorten(long)
    assert shorten(long) != shorten(long + "y")


def test_csv_rows_keep_their_line_numbers_even_with_quoted_newlines() -> None:
    data = b'sku,note\na,"two\nlines"\nb,plain\n'
    items = read_items(Path("x.csv"), "x.csv", "csv", lambda _: io.BytesIO(data))
    assert [(i.value, i.line) for i in items] == [
        ({"sku": "a", "note": "two\nlines"}, 3),
        ({"sku": "b", "note": "plain"}, 4),
    ]


def test_jsonl_scalars_are_items() -> None:
    data = b'"https://x.example/a"\n42\n'
    items = read_items(Path("x.jsonl"), "x.jsonl", "jsonl", lambda _: io.BytesIO(data))
    assert [i.value for i in items] == ["https://x.example/a", 42]


@pytest.mark.parametrize(
    ("data", "fmt", "where", "message"),
    [
        (b"", "text", (0, 0), "has no items"),
        (b"a\n\x00b\n", "text", (2, 1), "binary file (NUL byte)"),
        (b"ok\n\xff\n", "text", (2, 1), "not UTF-8 text"),
        (b"[1]\n", "jsonl", (1, 1), "a JSON Lines item must be an object or a scalar"),
        (b",\n1,2\n", "csv", (1, 1), "the CSV file needs a header row"),
    ],
)
def test_each_file_problems_are_located(
    data: bytes, fmt: str, where: tuple[int, int], message: str
) -> None:
    with pytest.raises(EachError) as caught:
        read_items(Path("f"), "f", fmt, lambda _: io.BytesIO(data))
    assert (caught.value.line, caught.value.column, caught.value.message) == (*where, message)
