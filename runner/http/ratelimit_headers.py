"""Pure parsing of the "slow down" signals a provider sends: Retry-After, RateLimit headers.

Covers `Retry-After` (seconds or HTTP-date, RFC 9110 section 10.2.3), `RateLimit-*` and
`X-RateLimit-*` (draft 6), the combined `RateLimit:` field (draft 7 `limit=, remaining=,
reset=`; draft 8 `r=, t=`) with `RateLimit-Policy` (`q=`, `w=`), and a body `retry_after`.
Waits are never clamped to an arbitrary ceiling: a provider that says "one hour" means it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

# A reset value above this is a unix timestamp (Spidra documents "unix time"), below it a
# delta in seconds (the drafts). 10^9 s is 2001-09-09; no window lasts 31 years.
_EPOCH_THRESHOLD = 1_000_000_000.0

_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,;\s]*)\s*')


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What the quota headers say; None where a field was absent or unreadable."""

    limit: float | None = None  # quota units per window
    remaining: float | None = None
    reset: float | None = None  # seconds from now until the quota resets
    window: float | None = None  # the policy's window in seconds (`w=`)

    @property
    def policy_rate(self) -> float | None:
        """Requests per second the policy allows, when both quota and window are known."""
        if self.limit is None or not self.window:
            return None
        return self.limit / self.window


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    text = text.strip().strip('"')
    try:
        value = float(text)
    except ValueError:
        return None
    if math.isnan(value) or math.isinf(value) or value < 0:
        return None
    return value


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from `Retry-After` (delay-seconds or HTTP-date); `now` is unix time."""
    if value is None or not value.strip():
        return None
    seconds = _number(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def server_now(headers: Mapping[str, str], now: float) -> float:
    """The reply's own `Date` when it has a readable one, else `now` (our unix time).

    An HTTP-date `Retry-After` and a unix-time reset are read on the provider's clock: against
    ours, stepped or skewed (NTP, suspend, a migrated VM), "in 60 s" could read as already
    past (every wait 0: a storm) or as hours away (a stall).
    """
    value = _lower(headers).get("date")
    if value is None:
        return now
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return now
    if when.tzinfo is None:  # "-0000": UTC with no claim about the zone (RFC 5322)
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _reset_delay(value: float | None, now: float) -> float | None:
    if value is None:
        return None
    if value >= _EPOCH_THRESHOLD:
        return max(0.0, value - now)
    return value


def _params(item: str) -> dict[str, str]:
    """`"name";r=5;t=30` or `limit=100, remaining=5` → {"r": "5", ...} (keys lower-cased)."""
    found: dict[str, str] = {}
    for match in _PARAM.finditer(item):
        found[match.group(1).lower()] = match.group(2).strip('"')
    return found


def _first_item(field: str) -> str:
    """The first list member of a structured field: draft 8 may list several policies."""
    # Draft 7 uses commas between parameters (`limit=1, remaining=0`); draft 8 uses them
    # between list members (`"a";r=1, "b";r=5`). A member starts with a quoted name.
    if field.lstrip().startswith('"'):
        return field.split(",", 1)[0]
    return field


def parse_rate_limit(headers: Mapping[str, str], now: float) -> RateLimitInfo | None:
    """The quota headers of a reply in whichever form it uses, or None if it has none.
    A unix-time reset is measured from the reply's `Date` when it has one (`server_now`)."""
    h = _lower(headers)
    now = server_now(h, now)
    for prefix in ("ratelimit-", "x-ratelimit-"):
        limit = _number(h.get(prefix + "limit"))
        remaining = _number(h.get(prefix + "remaining"))
        reset = _number(h.get(prefix + "reset"))
        if limit is not None or remaining is not None or reset is not None:
            window = _policy_window(h.get(prefix + "policy"))
            return RateLimitInfo(limit, remaining, _reset_delay(reset, now), window)
    combined = h.get("ratelimit")
    if combined is None:
        return None
    params = _params(_first_item(combined))
    remaining = _number(params.get("remaining", params.get("r")))
    reset = _number(params.get("reset", params.get("t")))
    limit = _number(params.get("limit"))
    window = None
    policy = h.get("ratelimit-policy")
    if policy is not None:
        policy_params = _params(_first_item(policy))
        limit = limit if limit is not None else _number(policy_params.get("q"))
        window = _number(policy_params.get("w"))
    if limit is None and remaining is None and reset is None:
        return None
    return RateLimitInfo(limit, remaining, _reset_delay(reset, now), window)


def _policy_window(policy: str | None) -> float | None:
    """Draft 6 `RateLimit-Policy: 100;w=60` → 60."""
    if policy is None:
        return None
    return _number(_params(policy.split(",", 1)[0]).get("w"))


def wait_hint(
    headers: Mapping[str, str],
    now: float,
    body_retry_after: float | None = None,
    *,
    throttled: bool = False,
) -> float | None:
    """How long the provider asks us to wait, from the strongest signal present.

    `Retry-After` wins; then the quota's reset time when the quota is exhausted (or the
    reply is a 429: `throttled`); then the body's `retry_after`. Dates are read against the
    reply's `Date` when it has one (`server_now`), else against `now`.
    """
    h = _lower(headers)
    now = server_now(h, now)
    retry_after = parse_retry_after(h.get("retry-after"), now)
    if retry_after is not None:
        return retry_after
    info = parse_rate_limit(h, now)
    if info is not None and info.reset is not None and (throttled or info.remaining == 0):
        return info.reset
    if body_retry_after is not None and body_retry_after >= 0:
        return body_retry_after
    return None
