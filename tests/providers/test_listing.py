"""runner.providers.listing: found / provably absent / cannot tell, from listing pages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from runner.errors import NotSubmittedError
from runner.providers.listing import Lookup, Page, Row, Verdict, look_up, settle

SINCE = 1_000_000.0
MARGIN = 60.0


def pages(rows: Sequence[Row], size: int) -> dict[int, Page]:
    chunks = [rows[i : i + size] for i in range(0, len(rows), size)] or [[]]
    count = len(chunks)
    return {n + 1: Page(chunk, n + 1 == count, count) for n, chunk in enumerate(chunks)}


async def walk(
    listing: Mapping[int, Page],
    *,
    ours: frozenset[str] = frozenset(),
    anchors: Mapping[str, float] | None = None,
    max_pages: int = 10,
    confirmed: frozenset[str] = frozenset(),
    max_confirms: int = 0,
) -> tuple[Lookup, list[int]]:
    asked: list[int] = []

    async def fetch(number: int) -> Page:
        asked.append(number)
        return listing[number]

    async def confirm(job_id: str) -> bool:
        return job_id in confirmed

    result = await look_up(
        fetch,
        since=SINCE,
        ours=ours,
        anchors=anchors or {},
        max_pages=max_pages,
        confirm=confirm,
        max_confirms=max_confirms,
    )
    return result, asked


def row(n: int, at: float | None, match: bool | None = False) -> Row:
    return Row(f"r{n}", at, match)


@pytest.mark.anyio
async def test_newest_first_stops_at_the_first_row_older_than_the_submit() -> None:
    rows = [row(n, SINCE + 5 - n) for n in range(5)] + [row(9, SINCE - MARGIN - 1)]
    rows += [row(10 + n, SINCE - 500 - n, match=True) for n in range(200)]  # old twins
    result, asked = await walk(pages(rows, 100))
    assert (result.verdict, asked) == (Verdict.ABSENT, [1])


@pytest.mark.anyio
async def test_newest_first_stops_just_past_a_run_answered_before_the_submit() -> None:
    # Every time is recent (within the skew margin), so only the anchor can stop the walk.
    rows = [row(n, SINCE + 10 - n / 10) for n in range(300)]
    listing = pages(rows, 100)
    result, asked = await walk(listing, ours=frozenset({"r3"}), anchors={"r3": SINCE - 0.5})
    assert (result.verdict, asked) == (Verdict.ABSENT, [1])
    # A run of the batch answered after the submit left proves nothing: read on, then bound.
    late, asked = await walk(
        listing, ours=frozenset({"r3"}), anchors={"r3": SINCE + 0.5}, max_pages=2
    )
    assert (late.verdict, late.why, asked) == (Verdict.UNKNOWN, "page bound", [1, 2])


@pytest.mark.anyio
async def test_a_row_tied_with_the_anchor_is_still_examined() -> None:
    rows = [row(1, SINCE + 3), row(2, SINCE + 2), row(3, SINCE + 2, match=True), row(4, SINCE)]
    anchors = {"r2": SINCE - 1}
    result, _ = await walk(pages(rows, 10), ours=frozenset({"r2"}), anchors=anchors)
    assert (result.verdict, result.found) == (Verdict.FOUND, "r3")


@pytest.mark.anyio
async def test_an_oldest_first_listing_is_read_from_its_last_page_backwards() -> None:
    # Fixed: after the last page, page 1 (already read) used to be skipped for the last
    # page again, which looked like an unordered listing ("cannot tell").
    rows = [row(n, SINCE + n, match=n == 0) for n in range(120)]
    result, asked = await walk(pages(rows, 50))
    assert (result.verdict, result.found, asked) == (Verdict.FOUND, "r0", [1, 3, 2])
    rows[0] = row(0, SINCE)
    absent, asked = await walk(pages(rows, 50))
    assert (absent.verdict, absent.why, asked) == (Verdict.ABSENT, "complete", [1, 3, 2])
    bounded, asked = await walk(pages(rows, 50), max_pages=2)
    assert (bounded.verdict, asked) == (Verdict.UNKNOWN, [1, 3])


@pytest.mark.anyio
async def test_a_listing_that_breaks_its_order_cannot_tell() -> None:
    listing = {
        1: Page([row(1, SINCE + 9), row(2, SINCE + 8)], False, 2),
        2: Page([row(3, SINCE + 20), row(4, SINCE - 500)], True, 2),
    }
    result, _ = await walk(listing)
    assert result.verdict is Verdict.UNKNOWN


@pytest.mark.anyio
async def test_without_times_only_a_complete_listing_proves_absence() -> None:
    rows = [row(n, None) for n in range(30)]
    complete, asked = await walk(pages(rows, 50))
    assert (complete.verdict, asked) == (Verdict.ABSENT, [1])
    cut, asked = await walk(pages(rows, 10), max_pages=2)
    assert (cut.verdict, asked) == (Verdict.UNKNOWN, [1, 2])
    untimed_match, _ = await walk(pages([row(1, None, match=True)], 10))
    assert untimed_match.verdict is Verdict.UNKNOWN  # could be this job's or an old one


@pytest.mark.anyio
async def test_candidates_are_confirmed_within_their_budget() -> None:
    rows = [row(n, SINCE + 10 - n, match=None) for n in range(4)]
    found, _ = await walk(pages(rows, 10), confirmed=frozenset({"r2"}), max_confirms=3)
    assert (found.verdict, found.found) == (Verdict.FOUND, "r2")
    spent, _ = await walk(pages(rows, 10), confirmed=frozenset({"r3"}), max_confirms=2)
    assert (spent.verdict, spent.why) == (Verdict.UNKNOWN, "too many candidates")


def test_settle_raises_not_submitted_only_for_absent() -> None:
    with pytest.raises(NotSubmittedError) as info:
        settle(Lookup(Verdict.ABSENT), "x: none")
    assert str(info.value) == "x: none (the listing back to before the submit shows none)"
    assert settle(Lookup(Verdict.FOUND, "id"), "x") == "id"
    assert settle(Lookup(Verdict.UNKNOWN), "x") is None
