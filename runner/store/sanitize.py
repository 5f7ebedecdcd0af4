"""Safe file names from provider data: no separators, no `..`, bounded, unique, never hidden.

`safe_name` is pure apart from recording what it hands out in the caller's `taken` set.
"""

from __future__ import annotations

import unicodedata

MAX_BYTES = 120  # UTF-8 bytes of a whole name, extension and collision number included
_MAX_EXT_BYTES = 16  # a longer "extension" is just part of the name
_FALLBACK = "file"
# Separators, Windows-reserved characters and anything invisible become "_".
_FORBIDDEN = frozenset('/\\:*?"<>|')
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"}
    | {f"com{i}" for i in range(1, 10)}
    | {f"lpt{i}" for i in range(1, 10)}
)


def _clean_char(char: str) -> str:
    if char in _FORBIDDEN:
        return "_"
    category = unicodedata.category(char)
    if category[0] == "C" or category in {"Zl", "Zp"}:  # control, format, unassigned, ...
        return "_"
    if category == "Zs":  # odd spaces (NBSP, ...) become a plain space
        return " "
    return char


def _truncate(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` that fits in `max_bytes` of UTF-8 (never splits a char)."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def _split(name: str) -> tuple[str, str]:
    """(stem, extension with its dot); a hidden-looking or very long suffix is no extension."""
    dot = name.rfind(".")
    if dot <= 0:
        return name, ""
    ext = name[dot:]
    if len(ext.encode("utf-8")) > _MAX_EXT_BYTES or not ext[1:].isalnum():
        return name, ""
    return name[:dot], ext


def _strip(text: str) -> str:
    return text.strip(" .")


def _base(name: str) -> tuple[str, str]:
    """The cleaned (stem, extension) of `name` before collision numbering."""
    text = unicodedata.normalize("NFC", name)
    text = "".join(_clean_char(c) for c in text)
    text = _strip(text)  # no leading dot (hidden, `..`), no trailing dot/space (Windows)
    stem, ext = _split(text)
    stem = _strip(stem)
    if not stem:
        stem = _FALLBACK
    if stem.split(".")[0].casefold() in _WINDOWS_RESERVED:
        stem = "_" + stem
    return stem, ext


def _fit(stem: str, suffix: str, ext: str) -> str:
    room = MAX_BYTES - len((suffix + ext).encode("utf-8"))
    fitted = _strip(_truncate(stem, room)) or _FALLBACK
    return fitted + suffix + ext


def safe_name(name: str, taken: set[str]) -> str:
    """A safe, unique file name for `name`, recorded in `taken`.

    `taken` holds the case-folded names already handed out in one directory (case-folded so
    `A.pdf` and `a.pdf` do not clash on case-insensitive file systems); the result's
    case-folded form is added to it. Collisions are numbered: `a.pdf`, `a-2.pdf`, `a-3.pdf`.
    """
    stem, ext = _base(name)
    candidate = _fit(stem, "", ext)
    number = 1
    while candidate.casefold() in taken:
        number += 1
        candidate = _fit(stem, f"-{number}", ext)
    taken.add(candidate.casefold())
    return candidate
