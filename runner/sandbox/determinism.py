"""Seeded randomness: ids, durations, outcomes and content from (seed, provider, body, n).

Nothing here reads the wall clock or depends on arrival order across different bodies:
every value is a pure function of the seed and the labels passed in (`wall_iso` only formats
a real time it is given, for listings).
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

# Payload timestamps are a fixed virtual epoch plus seeded offsets.
EPOCH = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)

_WORDS = [
    "alpha",
    "bravo",
    "harbor",
    "granite",
    "lantern",
    "meadow",
    "copper",
    "signal",
    "orbit",
    "willow",
    "ember",
    "quartz",
    "canyon",
    "ledger",
    "pixel",
    "summit",
    "violet",
    "maple",
    "anchor",
    "falcon",
    "river",
    "tundra",
    "nickel",
    "cobalt",
    "pricing",
    "invoice",
    "catalog",
    "report",
    "annual",
    "quarterly",
    "product",
    "widget",
    "service",
    "premium",
]


def canonical_body(body: Any) -> bytes:
    """Sorted keys, compact separators: the same bytes for equal JSON, however it was sent."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def body_key(body: Any) -> str:
    """sha256 (hex) of the canonical JSON of a request body: the books' submit key."""
    return hashlib.sha256(canonical_body(body)).hexdigest()


def derive(*labels: object) -> bytes:
    """32 bytes that depend only on the labels."""
    return hashlib.sha256("\x1f".join(str(label) for label in labels).encode()).digest()


def rng(*labels: object) -> random.Random:
    return random.Random(int.from_bytes(derive(*labels)[:8], "big"))


def uuid_from(digest: bytes) -> str:
    """A version-4-shaped UUID string from 16+ bytes."""
    raw = bytearray(digest[:16])
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def hex32_from(digest: bytes) -> str:
    return digest[:16].hex()


def skop_id_from(digest: bytes) -> str:
    return "job_" + digest[:6].hex()


def iso(offset: float, *, millis: bool = True, z: bool = True) -> str:
    """EPOCH + offset seconds as ISO 8601 (`2026-01-05T09:00:01.250Z`)."""
    moment = EPOCH + timedelta(seconds=round(offset, 3))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += f".{moment.microsecond // 1000:03d}"
    return text + ("Z" if z else "")


def wall_iso(unix: float, *, millis: bool = True, z: bool = True) -> str:
    """A real unix time as ISO 8601 UTC, shaped like `iso` (listings only: not seeded)."""
    moment = datetime.fromtimestamp(round(unix, 3), UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += f".{moment.microsecond // 1000:03d}"
    return text + ("Z" if z else "")


_BLOCK = 8192


def words(r: random.Random, n: int) -> str:
    return " ".join(r.choice(_WORDS) for _ in range(n))


def text_of_size(r: random.Random, size: int, *, heading: str = "") -> str:
    """Markdown-ish text of about `size` bytes (at least a heading line)."""
    head = f"# {heading or words(r, 3).title()}\n"
    parts = [head]
    length = len(head)
    while length < min(size, _BLOCK):
        line = words(r, r.randint(6, 14)).capitalize() + ".\n"
        parts.append(line)
        length += len(line)
    text = "".join(parts)
    if size <= _BLOCK:
        return text
    # Large documents repeat a seeded block: generating megabytes word by word is slow.
    body = text[len(head) :] or "text\n"
    return head + body * ((size - len(head)) // len(body) + 1)
