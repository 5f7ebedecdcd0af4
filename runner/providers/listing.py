"""Reading a provider's job listing from its newest end after an unanswered submit: the job
is found, provably absent, or runner cannot tell, within a bounded number of list requests.

Pure rules (`Scan`) plus one async walk (`look_up`) that the adapters feed with pages.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from runner.errors import NotSubmittedError
from runner.providers.replies import CLOCK_SKEW


@dataclass(frozen=True, slots=True)
class Row:
    """One listed job: its id, creation time (unix, if listed) and whether it is this job's
    (True / False; None: the row does not say, `confirm` must read the job)."""

    id: str
    created: float | None
    match: bool | None


@dataclass(frozen=True, slots=True)
class Page:
    rows: Sequence[Row]  # in the listing's own order
    last: bool  # no page comes after this one
    pages: int | None = None  # how many pages the listing has, when the reply says


class Verdict(StrEnum):
    FOUND = "found"
    ABSENT = "absent"  # a complete listing since the submit shows no such job
    UNKNOWN = "unknown"  # cut by the page bound, unordered, or a row runner cannot judge


@dataclass(frozen=True, slots=True)
class Lookup:
    verdict: Verdict
    found: str | None = None
    requests: int = 0  # list and confirm requests made
    why: str = ""


class Order(StrEnum):
    NEWEST_FIRST = "newest_first"
    OLDEST_FIRST = "oldest_first"
    UNKNOWN = "unknown"  # fewer than two distinct times, or not sorted by them


def order_of(rows: Iterable[Row]) -> Order:
    """The order a page's creation times show."""
    times = [row.created for row in rows if row.created is not None]
    if len(set(times)) < 2:
        return Order.UNKNOWN
    pairs = list(itertools.pairwise(times))
    if all(a >= b for a, b in pairs):
        return Order.NEWEST_FIRST
    if all(a <= b for a, b in pairs):
        return Order.OLDEST_FIRST
    return Order.UNKNOWN


@dataclass(slots=True)
class Scan:
    """The rules for rows read newest first. A row may be this job's only if it was created
    at or after `since` less `margin` (the provider's clock may lag ours). The walk stops,
    proving absence, at the first row older than that, or just past an `anchor`: a job of
    this batch whose submit was answered before this submit left (`anchors`: id → when the
    answer came), so every row below it is older than this submit whatever the clocks say.
    `ours`: ids other jobs of the batch own, never adopted."""

    since: float
    ours: Collection[str]
    anchors: Mapping[str, float]
    margin: float = CLOCK_SKEW
    ordered: bool = True  # False: the listing's order is unknown, so no stop rule applies
    _newest: float | None = None  # the last creation time seen (must not grow)
    _anchor: float | None = None  # creation time of the anchor passed (ties may be ours)
    _anchored: bool = False

    def step(self, row: Row) -> Verdict | None:
        """FOUND (a candidate: confirm it when `row.match` is None), ABSENT, UNKNOWN
        (the listing is not newest first after all, or a matching row has no time), or
        None: go on."""
        created = row.created
        if self.ordered and created is not None:
            if self._newest is not None and created > self._newest:
                return Verdict.UNKNOWN
            self._newest = created
        if self.ordered and self._anchored and (created is None or created != self._anchor):
            return Verdict.ABSENT  # below the anchor (a tie with it might still be ours)
        if created is not None and created < self.since - self.margin:
            return Verdict.ABSENT if self.ordered else None
        if row.id in self.ours:
            if self.ordered and self.anchors.get(row.id, math.inf) < self.since:
                self._anchored, self._anchor = True, created
            return None
        if row.match is False:
            return None
        return Verdict.FOUND if created is not None else Verdict.UNKNOWN


Fetch = Callable[[int], Awaitable[Page]]
Confirm = Callable[[str], Awaitable[bool]]


async def look_up(
    fetch: Fetch,
    *,
    since: float,
    ours: Collection[str],
    anchors: Mapping[str, float],
    max_pages: int,
    confirm: Confirm | None = None,
    max_confirms: int = 0,
) -> Lookup:
    """Walk the listing (`fetch(n)`: page n, 1-based) from its newest end.

    Newest first (as its times show): pages 1, 2, … until a stop rule. Oldest first: the
    last page, then backwards (a job created meanwhile is appended, it never moves a row).
    Order unknown: every page; only a complete listing proves absence. Past `max_pages`
    pages or `max_confirms` confirmations: UNKNOWN."""
    requests = 0
    confirms = 0

    async def get(number: int) -> Page:
        nonlocal requests
        requests += 1
        return await fetch(number)

    async def judge(rows: Iterable[Row], scan: Scan) -> Lookup | None:
        nonlocal confirms, requests
        for row in rows:
            verdict = scan.step(row)
            if verdict is None:
                continue
            if verdict is not Verdict.FOUND:
                why = "past the submit" if verdict is Verdict.ABSENT else "cannot judge a row"
                return Lookup(verdict, requests=requests, why=why)
            if row.match is None:
                if confirm is None or confirms >= max_confirms:
                    return Lookup(Verdict.UNKNOWN, requests=requests, why="too many candidates")
                confirms += 1
                requests += 1
                if not await confirm(row.id):
                    continue
            return Lookup(Verdict.FOUND, row.id, requests, "found")
        return None

    first = await get(1)
    order = order_of(first.rows)
    if order is Order.OLDEST_FIRST and not first.last and first.pages:
        scan = Scan(since, ours, anchors)
        number = first.pages
        while True:
            page = first if number == 1 else await get(number)
            done = await judge(reversed(page.rows), scan)
            if done is not None:
                return done
            if number == 1:
                return Lookup(Verdict.ABSENT, requests=requests, why="complete")
            if requests >= max_pages:
                return Lookup(Verdict.UNKNOWN, requests=requests, why="page bound")
            number -= 1
    ordered = order is Order.NEWEST_FIRST or (order is Order.OLDEST_FIRST and first.last)
    scan = Scan(since, ours, anchors, ordered=ordered)
    page, number = first, 1
    while True:
        rows = reversed(page.rows) if order is Order.OLDEST_FIRST else page.rows
        done = await judge(rows, scan)
        if done is not None:
            return done
        if page.last:
            return Lookup(Verdict.ABSENT, requests=requests, why="complete")
        if number >= max_pages:
            return Lookup(Verdict.UNKNOWN, requests=requests, why="page bound")
        number += 1
        page = await get(number)


def settle(lookup: Lookup, absent: str) -> str | None:
    """The found id; None when runner cannot tell; NotSubmittedError (message `absent`
    and how the listing proved it) when the job provably does not exist."""
    if lookup.verdict is Verdict.ABSENT:
        raise NotSubmittedError(f"{absent} (the listing back to before the submit shows none)")
    return lookup.found if lookup.verdict is Verdict.FOUND else None
