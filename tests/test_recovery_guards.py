"""The durable "sent" mark (recovery.MarkSent), found unguarded by the mutation run (make
mutate): which methods mark, what the mark holds, and that every argument passes through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.engine.recovery import SENT_NOTE, MarkSent, was_sent
from runner.lifecycle import JobRecord
from runner.providers.base import Reply
from tests.test_engine import make_plan

WALL = 1_800_000_000.0


class Recording:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def request(self, method: str, url: str, **kw: Any) -> Reply:
        self.calls.append((method, url, kw))
        return Reply(200, {}, b"")

    async def download(self, url: str, dest: Path, **kw: Any) -> tuple[Reply, int]:
        self.calls.append(("download", url, dest, kw))
        return Reply(200, {}, b""), 0

    async def aclose(self) -> None:
        pass


class EngineStub:
    def __init__(self) -> None:
        self.noted_keys: list[str] = []

    def wall(self) -> float:
        return WALL

    def noted(self, job: JobRecord, key: str) -> None:
        self.noted_keys.append(key)


@pytest.mark.anyio
async def test_only_a_request_that_can_change_something_marks_the_attempt_sent(
    tmp_path: Path,
) -> None:
    inner, engine = Recording(), EngineStub()
    job = JobRecord(make_plan(1).jobs[0], attempts=2)
    sent = MarkSent(inner, engine, job)  # type: ignore[arg-type]
    await sent.request("HEAD", "http://p/h", headers={"k": "v"})
    await sent.request("get", "http://p/g", headers={"k": "v"}, params={"q": 1})
    await sent.download("http://p/d", tmp_path / "d", headers={"k": "v"}, max_bytes=5)
    assert not was_sent(job)
    assert engine.noted_keys == []
    await sent.request("POST", "http://p/s", headers={"k": "v"}, params={"q": 2}, json={"a": 1})
    await sent.request("DELETE", "http://p/x", headers={"k": "v"})
    assert job.notes[SENT_NOTE] == {"attempt": 2, "at": WALL}
    assert was_sent(job)
    assert engine.noted_keys == [SENT_NOTE]  # once per attempt
    assert inner.calls == [
        ("HEAD", "http://p/h", {"headers": {"k": "v"}, "params": None, "json": None}),
        ("get", "http://p/g", {"headers": {"k": "v"}, "params": {"q": 1}, "json": None}),
        ("download", "http://p/d", tmp_path / "d", {"headers": {"k": "v"}, "max_bytes": 5}),
        ("POST", "http://p/s", {"headers": {"k": "v"}, "params": {"q": 2}, "json": {"a": 1}}),
        ("DELETE", "http://p/x", {"headers": {"k": "v"}, "params": None, "json": None}),
    ]
