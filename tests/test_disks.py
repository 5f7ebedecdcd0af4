"""Storage failures met by each write path, without a mount: SQLite's own page limit
(SQLITE_FULL), /dev/full (ENOSPC from the kernel), a stream that refuses a write. Each is one
StoreError naming the path, and closing afterwards is safe."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from runner.batch.console import Console
from runner.errors import StoreError
from runner.http.client import _stream_to
from runner.lifecycle import Event, JobRecord, State, advance
from runner.remote import RemoteState, Status
from runner.store.journal import Journal
from runner.store.log import BatchLog
from tests.test_results import make_plan


def _move(journal: Journal, job: JobRecord, event: Event) -> None:
    previous = job.state
    job.state = advance(previous, event)
    journal.transition(job, event, previous)


def test_a_journal_write_sqlite_refuses_is_rolled_back_and_names_the_journal(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.sqlite"
    plan = make_plan(2)
    journal = Journal.create(path, plan, "b")
    job = JobRecord(spec=plan.jobs[0])
    _move(journal, job, Event.SUBMIT)
    journal.flush()  # in a run, the submit's "sent" note commits it
    pages = journal._conn.execute("PRAGMA page_count").fetchone()[0]
    journal._conn.execute(f"PRAGMA max_page_count = {pages}")  # the database is full
    job.error = "x" * 50_000  # needs pages it cannot have
    with pytest.raises(StoreError) as refused:
        _move(journal, job, Event.FAILED)
    assert refused.value.path == path
    assert str(refused.value) == f"cannot write {path}: {refused.value.reason}"
    assert refused.value.remedy == "free space"
    assert isinstance(refused.value.__cause__, sqlite3.OperationalError)
    assert journal.failed is refused.value
    journal.close()  # safe after the failure
    with Journal.open(path, readonly=True) as reader:  # rolled back: the last commit stands
        assert reader.counts() == {"planned": 1, "submitting": 1}
        assert [e.event for e in reader.events()] == ["submit"]


def test_a_poll_commit_sqlite_refuses_raises_once_and_close_is_safe(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    plan = make_plan(1)
    journal = Journal.create(path, plan, "b")
    job = JobRecord(spec=plan.jobs[0])
    _move(journal, job, Event.SUBMIT)
    journal.flush()  # in a run, the submit's "sent" note commits it
    pages = journal._conn.execute("PRAGMA page_count").fetchone()[0]
    journal._conn.execute(f"PRAGMA max_page_count = {pages}")
    job.state = State.RUNNING  # as the engine would have it; the poll row grows past a page
    job.raw_status = "y" * 50_000
    with pytest.raises(StoreError):
        journal.polled(job, Status(RemoteState.RUNNING, raw=job.raw_status))
    journal.close()
    with Journal.open(path, readonly=True) as reader:
        assert reader.row(job.spec.id) is not None
        assert reader.counts() == {"submitting": 1}


def test_a_log_line_the_disk_refuses_names_the_log_and_closing_is_safe() -> None:
    full = Path("/dev/full")
    log = BatchLog(full, batch_id="b")
    with pytest.raises(StoreError) as refused:
        log.logger.info("batch.started", jobs=1)
    assert str(refused.value) == f"cannot write {full}: No space left on device"
    assert refused.value.path == full
    assert refused.value.remedy == "free space"
    assert log.failed is refused.value
    log.close()  # nothing buffered: nothing fails again
    log.close()


def test_a_download_into_a_full_disk_is_a_store_error_not_a_cut_reply() -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"z" * 65_536

    async def main() -> None:
        await _stream_to(Path("/dev/full"), body(), None, None)

    with pytest.raises(StoreError) as refused:
        anyio.run(main)
    assert str(refused.value) == "cannot write /dev/full: No space left on device"


class _Refusing(io.StringIO):
    """stderr redirected to a file on a disk that fills up once the display has started."""

    full = False

    def write(self, text: str) -> int:
        if self.full:
            raise OSError(28, "No space left on device")
        return super().write(text)

    def isatty(self) -> bool:
        return True


def test_closing_the_console_on_a_stream_that_refuses_writes_is_safe() -> None:
    stream = _Refusing()
    console = Console(stream=stream, tty=True)
    console.start(3)
    stream.full = True
    console.close()
    console.close()
