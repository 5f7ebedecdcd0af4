"""Secrets out of every text: long ones anywhere, short ones as whole tokens only."""

from __future__ import annotations

from runner.store.redaction import Redactor, redactor

KEY = "sk-live-0123456789abcdef"


def test_a_real_length_key_is_replaced_wherever_it_appears() -> None:
    r = Redactor([KEY])
    assert r.text(f"Bearer {KEY}") == "Bearer ***"
    assert r.text(f"x{KEY}y") == "x***y"  # even glued to other text
    assert r.text("nothing here") == "nothing here"


def test_the_longest_secret_is_replaced_whole() -> None:
    r = Redactor(["Token " + KEY, KEY])
    assert r.text(f"auth: Token {KEY}; {KEY}") == "auth: ***; ***"


def test_a_short_key_is_replaced_only_as_a_token_of_its_own() -> None:
    # a test key "k" must not turn "check providers.skop" into "chec*** providers.s***op"
    r = Redactor(["k"])
    assert r.text("check providers.skop.base_url") == "check providers.skop.base_url"
    assert r.text('{"key": "k"}; Bearer k') == '{"key": "***"}; Bearer ***'
    assert r.text("k") == "***"


def test_trees_are_redacted_keys_and_values_and_odd_objects_as_text() -> None:
    r = Redactor([KEY])
    tree = {KEY: [KEY, 1, None, True, {"a": f"={KEY}"}], "n": 2.5, "o": {1, 2}}
    assert r.tree(tree) == {"***": ["***", 1, None, True, {"a": "=***"}], "n": 2.5, "o": [1, 2]}


def test_no_secrets_changes_nothing_and_empty_ones_are_ignored() -> None:
    assert not Redactor(["", ""])
    assert Redactor([""]).text("abc") == "abc"
    assert redactor((KEY,)) is redactor((KEY,))  # compiled once per batch
