"""`each` file details the mutation run (make mutate) found unguarded: every item and every
error names its file, and a blank CSV row is skipped, not the end of the file."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import IO, Any

import pytest

from runner.errors import EachError
from runner.manifest import each
from runner.manifest.each import (
    MAX_ID_LENGTH,
    compile_id,
    compile_template,
    guess_format,
    items_from_list,
    read_items,
    shorten,
    template_cost,
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_blank_csv_row_is_skipped_and_the_rows_after_it_are_read(tmp_path: Path) -> None:
    path = _write(tmp_path, "u.csv", "url,tag\nhttps://a,x\n , \nhttps://b,y\n")
    items = read_items(path, "inputs/u.csv", "csv")
    assert [(i.value, i.file, i.line) for i in items] == [
        ({"url": "https://a", "tag": "x"}, "inputs/u.csv", 2),
        ({"url": "https://b", "tag": "y"}, "inputs/u.csv", 4),
    ]


def test_a_csv_without_a_header_names_its_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "u.csv", " , \nhttps://a,x\n")
    with pytest.raises(EachError) as caught:
        read_items(path, "inputs/u.csv", "csv")
    error = caught.value
    assert (error.file, error.line, error.column) == ("inputs/u.csv", 1, 1)
    assert error.message == "the CSV file needs a header row"


def test_a_json_lines_list_names_its_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "u.jsonl", '{"url": "https://a"}\n[1, 2]\n')
    with pytest.raises(EachError) as caught:
        read_items(path, "inputs/u.jsonl", "jsonl")
    error = caught.value
    assert (error.file, error.line, error.column) == ("inputs/u.jsonl", 2, 1)
    assert error.message == "a JSON Lines item must be an object or a scalar"


# -- found by the second mutation run ---------------------------------------------------------


def _error(path: Path, fmt: str = "text", **kwargs: Any) -> tuple[str, int, int, str, str]:
    with pytest.raises(EachError) as caught:
        read_items(path, "inputs/u.txt", fmt, **kwargs)
    error = caught.value
    return error.file, error.line, error.column, error.message, str(error)


def test_a_missing_file_is_an_error_about_the_whole_file(tmp_path: Path) -> None:
    assert _error(tmp_path / "nope.txt") == ("inputs/u.txt", 0, 0, "no such file", "no such file")


def test_a_directory_is_an_error_about_the_whole_file(tmp_path: Path) -> None:
    assert _error(tmp_path) == (
        "inputs/u.txt",
        0,
        0,
        "is a directory, not a file",
        "is a directory, not a file",
    )


def test_an_unreadable_file_says_why_in_the_os_words(tmp_path: Path) -> None:
    def denied(path: Path) -> IO[bytes]:
        raise PermissionError(13, "Permission denied")

    def bare(path: Path) -> IO[bytes]:
        raise OSError("device went away")

    message = "cannot read it: Permission denied"
    assert _error(tmp_path / "u.txt", opener=denied) == ("inputs/u.txt", 0, 0, message, message)
    message = "cannot read it: device went away"
    assert _error(tmp_path / "u.txt", opener=bare) == ("inputs/u.txt", 0, 0, message, message)


def test_a_file_of_exactly_the_size_limit_is_read_and_one_byte_more_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "u.txt", "a\nb\n")
    monkeypatch.setattr(each, "MAX_FILE_BYTES", 4)
    assert [i.value for i in read_items(path, "inputs/u.txt", "text")] == ["a", "b"]
    monkeypatch.setattr(each, "MAX_FILE_BYTES", 3)
    message = "4 bytes is too big (at most 3)"
    assert _error(path) == ("inputs/u.txt", 0, 0, message, message)


def test_a_stream_without_a_size_is_never_refused_as_too_big(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stream with no file number (a pipe-like opener) has an unknown size: count it as 0.
    monkeypatch.setattr(each, "MAX_FILE_BYTES", 0)
    items = read_items(tmp_path / "u.txt", "inputs/u.txt", "text", lambda p: io.BytesIO(b"a\n"))
    assert [i.value for i in items] == ["a"]


def test_an_empty_file_names_its_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "u.txt", "\n  \n")
    assert _error(path) == ("inputs/u.txt", 0, 0, "has no items", "has no items")


def test_a_nul_byte_is_located_at_the_first_one(tmp_path: Path) -> None:
    path = tmp_path / "u.txt"
    path.write_bytes(b"ok\nab\x00c\x00\n")
    message = "binary file (NUL byte)"
    assert _error(path) == ("inputs/u.txt", 2, 3, message, message)


def test_bytes_that_are_not_utf8_are_located(tmp_path: Path) -> None:
    path = tmp_path / "u.txt"
    path.write_bytes(b"ok\nab\xffc\n")
    assert _error(path) == ("inputs/u.txt", 2, 3, "not UTF-8 text", "not UTF-8 text")


def test_only_the_line_end_is_cut_from_a_line(tmp_path: Path) -> None:
    # The last cell keeps its spaces (cells are values, as written); a trailing letter that
    # happens to be X is not a line-end character.
    path = tmp_path / "u.csv"
    path.write_bytes(b"url,tag\r\nhttps://a,x \t\r\nhttps://b,BOX\n")
    assert [i.value for i in read_items(path, "inputs/u.csv", "csv")] == [
        {"url": "https://a", "tag": "x \t"},
        {"url": "https://b", "tag": "BOX"},
    ]


def test_the_format_follows_the_suffix_and_anything_else_is_text() -> None:
    assert guess_format("u.CSV") == "csv"
    assert guess_format("u.ndjson") == "jsonl"
    assert guess_format("u.txt") == "text"
    assert guess_format("urls") == "text"


def test_list_items_and_their_positions_must_pair_up() -> None:
    items = items_from_list(["a", "b"], "manifest.yaml", [(3, 5), (4, 5)])
    assert [(i.value, i.line, i.column) for i in items] == [("a", 3, 5), ("b", 4, 5)]
    with pytest.raises(ValueError):
        items_from_list(["a", "b"], "manifest.yaml", [(3, 5)])


def test_escaped_braces_alone_are_still_unescaped() -> None:
    assert compile_template("a {{ b").build({}) == "a { b"
    assert compile_template("a }} b").build({}) == "a } b"
    assert compile_template("{{").build({}) == "{"


def test_a_stray_brace_costs_nothing_and_stays_as_written() -> None:
    assert template_cost("a { b") == (0, {})
    assert compile_template("a { b").build({}) == "a { b"


def test_template_cost_counts_literal_characters_and_uses() -> None:
    assert template_cost("{a}-{b}") == (1, {"a": 1, "b": 1})
    assert template_cost({"k": ["{a}", "x{a}"], "n": 3}) == (1, {"a": 2})


def test_values_inside_text_are_json_except_plain_strings_and_ints() -> None:
    build = compile_template("v={item}").build
    assert build({"item": 7}) == "v=7"
    assert build({"item": "é"}) == "v=é"
    assert build({"item": True}) == "v=true"
    assert build({"item": None}) == "v=null"
    assert build({"item": {"name": "é"}}) == 'v={"name": "é"}'


def test_a_placeholder_first_in_a_longer_string_is_text() -> None:
    assert compile_template("{a}-x").build({"a": 5}) == "5-x"
    assert compile_template("{a}").build({"a": 5}) == 5


def test_a_list_keeps_its_literal_members_beside_filled_ones() -> None:
    template = compile_template(["plain", "{a}", 3])
    assert template.build({"a": 5}) == ["plain", 5, 3]
    assert template.paths == {(1,): frozenset({"a"})}


def test_a_value_without_placeholders_is_built_as_itself() -> None:
    template = compile_template({"k": "v", "n": [1]})
    assert template.build({"item": "x"}) == {"k": "v", "n": [1]}
    assert template.names == frozenset()
    build, names = compile_id("fixed-id")
    assert (build({"item": "x"}), names) == ("fixed-id", frozenset())


def test_an_id_of_exactly_the_limit_is_kept_and_a_cut_drops_trailing_dashes() -> None:
    exact = "a" * MAX_ID_LENGTH
    assert shorten(exact) == exact
    long = "X" * (MAX_ID_LENGTH - 12) + "-" + "y" * 20
    digest = hashlib.sha256(long.encode("utf-8")).hexdigest()[:10]
    assert shorten(long) == "X" * (MAX_ID_LENGTH - 12) + "-" + digest
