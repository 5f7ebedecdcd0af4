"""`each` file details the mutation run (make mutate) found unguarded: every item and every
error names its file, and a blank CSV row is skipped, not the end of the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.manifest.each import EachError, read_items


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
