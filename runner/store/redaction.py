"""Secrets out of every text runner writes: one Redactor, used by the log, the journal, the
results, the console and the error handler."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

REDACTED = "***"
# A secret this long is replaced wherever it appears, even inside a longer word. A shorter
# one (no real API key is; a test key may be) only where it stands as a token of its own:
# replacing the key "k" inside every word would turn "check" into "chec***".
ANYWHERE = 8
_WORD = "A-Za-z0-9_"


class Redactor:
    """Replaces each non-empty secret with `***`, the longest first (a secret containing
    another is replaced whole)."""

    __slots__ = ("_pattern",)

    def __init__(self, secrets: Iterable[str]) -> None:
        unique = sorted({s for s in secrets if s}, key=len, reverse=True)
        parts = [
            re.escape(s) if len(s) >= ANYWHERE else rf"(?<![{_WORD}]){re.escape(s)}(?![{_WORD}])"
            for s in unique
        ]
        self._pattern = re.compile("|".join(parts)) if parts else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def found(self, text: str) -> bool:
        """Does any secret occur in `text`?"""
        return self._pattern is not None and self._pattern.search(text) is not None

    def text(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def tree(self, value: Any) -> Any:
        """`value` (JSON-like) with every string in it redacted, mapping keys too; values
        that are not plain JSON become their `str()` first, so a secret cannot hide in an
        object's repr."""
        if self._pattern is None or value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.tree(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.tree(v) for v in value]
        return self.text(str(value))


@functools.lru_cache(maxsize=64)
def redactor(secrets: tuple[str, ...]) -> Redactor:
    """The Redactor of a batch's secrets, made once (its pattern is compiled once)."""
    return Redactor(secrets)


def redact(text: str, secrets: Sequence[str]) -> str:
    """`text` with every secret replaced by `***`."""
    return redactor(tuple(secrets)).text(text)


def redact_tree(value: Any, secrets: Sequence[str]) -> Any:
    """`value` (JSON-like) with every string in it redacted, mapping keys too."""
    return redactor(tuple(secrets)).tree(value)
