"""Helpers the Bulkgrid, Lobstr and Skop adapters share: pure readers of provider replies
(JSON objects, error bodies of every shape, timestamps, wait hints) and `PerClient`, the
small memory an adapter keeps per batch client.
"""

from __future__ import annotations

import json
import math
import re
import weakref
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from runner.errors import ProviderCallError, ProviderResponseError
from runner.providers.base import ApiError, Reply

# A remote timestamp may lag our clock a little; reconcile accepts jobs created this many
# seconds before the submit was sent (loopback has no skew; real providers a few seconds).
CLOCK_SKEW = 60.0
_EXCERPT = 200
T = TypeVar("T")
_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*(?:s\b|sec|second)", re.IGNORECASE)


def excerpt(body: Any, limit: int = _EXCERPT) -> str:
    """A short one-line rendering of a payload for error messages."""
    text = body if isinstance(body, str) else json.dumps(body, sort_keys=True, default=str)
    text = text.strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def reply_json(reply: Reply, provider: str) -> Any:
    """The reply's JSON, or ProviderResponseError with an excerpt of what came instead."""
    try:
        return reply.json()
    except ValueError:
        raise ProviderResponseError(f"{provider}: the reply is not JSON", reply.excerpt()) from None


def json_object(reply: Reply, what: str) -> Mapping[str, Any]:
    """The reply as a JSON object; ProviderResponseError naming `what` otherwise."""
    try:
        body = reply.json()
    except ValueError:
        raise ProviderResponseError(f"{what} is not JSON", reply.excerpt()) from None
    if not isinstance(body, dict):
        raise ProviderResponseError(f"{what} is not a JSON object", reply.excerpt())
    return body


def require_object(body: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise ProviderResponseError(f"{what} is not a JSON object", excerpt(body))
    return body


def lower(value: Any) -> str | None:
    """A raw status compared case-insensitively (docs/engineering.md#remote-states)."""
    return value.strip().lower() if isinstance(value, str) else None


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_time(value: Any) -> float | None:
    """Unix time of an ISO 8601 timestamp; naive ones are UTC (Lobstr sends them so)."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def error_text(reply: Reply) -> tuple[str, str | None]:
    """(message, code) from an error body of any shape providers send: `{"error": "msg"}`,
    `{"error": {"message", "type"}}`, `{"errors": {"message", "type", "code"}}`,
    `{"detail": "..."}`, `{"error": "code", "message": "..."}`; else the body text.
    A one-word string is a code (`RunInProgress`, `validation_error`), a sentence a message."""
    try:
        body = reply.json()
    except ValueError:
        body = None
    messages: list[str] = []
    codes: list[str] = []
    _visit(body, messages, codes, 0)
    message = messages[0] if messages else codes[0] if codes else None
    return message or reply.excerpt() or f"HTTP {reply.status_code}", codes[0] if codes else None


_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")


def _visit(obj: Any, messages: list[str], codes: list[str], depth: int) -> None:
    if depth > 3:
        return
    if isinstance(obj, list):
        if obj:
            _visit(obj[0], messages, codes, depth + 1)
        return
    if isinstance(obj, str):
        text = obj.strip()
        if text:
            (codes if _CODE.fullmatch(text) else messages).append(text)
        return
    if not isinstance(obj, Mapping):
        return
    for key in ("message", "msg", "error_message"):
        value = obj.get(key)
        if isinstance(value, str) and value.strip():
            messages.append(value.strip())
    for key in ("type", "code", "error_code"):
        value = obj.get(key)
        if isinstance(value, str) and _CODE.fullmatch(value.strip()):
            codes.append(value.strip())
    for key in ("error", "errors", "detail"):
        _visit(obj.get(key), messages, codes, depth + 1)


def body_retry_after(reply: Reply) -> float | None:
    """A wait the body asks for: `retry_after` (number) or "... available in N seconds"."""
    try:
        body = reply.json()
    except ValueError:
        return None
    if not isinstance(body, Mapping):
        return None
    direct = number(body.get("retry_after"))
    if direct is not None:
        return max(direct, 0.0)
    for value in (body.get("detail"), body.get("error"), body.get("message")):
        if isinstance(value, str) and (match := _SECONDS.search(value)):
            return float(match.group(1))
    return None


def api_error_of(exc: BaseException) -> ApiError | None:
    """What a failed `ProviderHttp.send` said, read from the ProviderCallError it raised
    (its `kind` and `code`), or None for other failures."""
    if not isinstance(exc, ProviderCallError):
        return None
    return ApiError(exc.kind, str(exc), code=exc.code)


@runtime_checkable
class Gated(Protocol):
    """A client whose per-job copies share one gate: the engine's (`for_job` copies it)."""

    @property
    def gate(self) -> object: ...


class PerClient(Generic[T]):
    """What an adapter remembers per ProviderHttp (the engine makes one per provider per
    batch): e.g. the runs it started. Dropped with the client, so two batches in one
    process never see each other's memory."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._by_client: weakref.WeakKeyDictionary[Any, T] = weakref.WeakKeyDictionary()
        self._fallback: T | None = None

    def of(self, client: object) -> T:
        # The engine copies its client per job (`for_job`) but every copy shares the
        # provider's Gate: key on that when there is one.
        if isinstance(client, Gated):
            client = client.gate
        try:
            found = self._by_client.get(client)
            if found is None:
                found = self._by_client[client] = self._factory()
            return found
        except TypeError:  # a client that cannot be weakly referenced: one shared memory
            if self._fallback is None:
                self._fallback = self._factory()
            return self._fallback
