"""Edges of `safe_name` the mutation run (make mutate) found unguarded: which suffix is the
extension, where a collision number goes, line separators, and reserved stems."""

from __future__ import annotations

from runner.store.sanitize import safe_name


def test_the_collision_number_goes_before_the_last_extension_only() -> None:
    assert safe_name("a.b.c", {"a.b.c"}) == "a.b-2.c"
    assert safe_name("a.b", {"a.b"}) == "a-2.b"


def test_an_extension_of_exactly_sixteen_bytes_is_still_an_extension() -> None:
    ext = ".abcdefghijklmno"  # the dot and 15 characters: 16 bytes
    assert safe_name("x" + ext, {"x" + ext}) == "x-2" + ext
    longer = ext + "p"  # 17 bytes: part of the name
    assert safe_name("x" + longer, {"x" + longer}) == "x" + longer + "-2"


def test_a_suffix_with_a_non_alphanumeric_character_is_not_an_extension() -> None:
    assert safe_name("x.!a", {"x.!a"}) == "x.!a-2"


def test_line_and_paragraph_separators_become_underscores() -> None:
    assert safe_name("a\u2028b\u2029c.txt", set()) == "a_b_c.txt"


def test_a_reserved_device_name_before_a_double_extension_is_prefixed() -> None:
    assert safe_name("con.tar.gz", set()) == "_con.tar.gz"
    assert safe_name("Lpt3.x.y", set()) == "_Lpt3.x.y"


def test_only_dots_and_spaces_are_stripped_from_the_ends() -> None:
    assert safe_name("XRAY.txtX", set()) == "XRAY.txtX"
    assert safe_name(" .X. ", set()) == "X"
