"""batch.json and job.json details the mutation run (make mutate) found unguarded: every
field batch.json records, what Endpoints reads back from it, the installed dependencies it
lists, and the normalized job.json fields a provider's extras never override."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from runner import __version__
from runner.errors import StoreError, remedy_for, store_error
from runner.fingerprint import job_fingerprint
from runner.lifecycle import JobRecord, State
from runner.remote import FetchReport
from runner.store.results import (
    BatchDir,
    Endpoints,
    JobDir,
    check,
    check_job_files,
    dependency_versions,
    format_batch_id,
    iso_utc,
    outcome_document,
    point_latest,
)
from tests.test_results import END, MANIFEST, START, make_plan


def _info(batch: BatchDir) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((batch.path / "batch.json").read_text("utf-8"))
    return document


def test_batch_json_at_creation_has_null_end_fields_and_says_where_it_ran(
    tmp_path: Path,
) -> None:
    plan = make_plan()
    batch = BatchDir.create(tmp_path, plan, now=START)
    batch.write_info(
        started=START,
        argv=["runner", "run", "--key", "sk-live-SECRET"],
        secrets=["sk-live-SECRET"],
        endpoints=Endpoints({"spidra": "http://127.0.0.1:9/spidra"}, "in-process"),
    )
    assert _info(batch) == {
        "batch_id": "20261122T030000Z",
        "name": "nightly",
        "manifest_sha256": hashlib.sha256(MANIFEST).hexdigest(),
        "runner_version": __version__,
        "python": sys.version.split()[0],
        "dependencies": dependency_versions(),
        "argv": ["runner", "run", "--key", "***"],
        "started": "2026-11-22T03:00:00Z",
        "ended": None,
        "counts": None,
        "exit_code": None,
        "remote_ids": {},
        "inputs": {},
        "endpoints": {"spidra": "http://127.0.0.1:9/spidra"},
        "sandbox": "in-process",
    }


def test_batch_json_when_sealed_keeps_the_endpoints_it_recorded(tmp_path: Path) -> None:
    plan = make_plan()
    batch = BatchDir.create(tmp_path, plan, now=START)
    batch.write_info(
        started=START,
        argv=[],
        secrets=[],
        endpoints=Endpoints({"spidra": "http://127.0.0.1:9/spidra"}, "http://127.0.0.1:9"),
    )
    batch.finish(
        counts={"succeeded": 2},
        exit_code=0,
        started=START,
        ended=END,
        argv=["runner", "run"],
        secrets=plan.secrets,
        remote_ids={"job-0": "r-0"},
    )
    info = _info(batch)
    assert (info["ended"], info["counts"], info["exit_code"], info["remote_ids"]) == (
        "2026-11-22T03:05:07Z",
        {"succeeded": 2},
        0,
        {"job-0": "r-0"},
    )
    assert Endpoints.from_info(info) == Endpoints(
        {"spidra": "http://127.0.0.1:9/spidra"}, "http://127.0.0.1:9"
    )


@pytest.mark.parametrize(
    "document",
    [
        None,
        {},
        {"endpoints": ["http://a"], "sandbox": 3},
        {"endpoints": {"spidra": 3}},
        {"endpoints": {1: "http://a"}},
    ],
)
def test_endpoints_read_nothing_from_a_batch_json_that_recorded_nothing_usable(
    document: dict[Any, Any] | None,
) -> None:
    assert Endpoints.from_info(document) == Endpoints({}, None)


def test_endpoints_keep_good_urls_even_when_the_sandbox_entry_is_unusable() -> None:
    document = {"endpoints": {"a": "http://a", "b": "http://b"}, "sandbox": ["x"]}
    assert Endpoints.from_info(document) == Endpoints({"a": "http://a", "b": "http://b"})


def test_dependencies_are_the_core_requirements_by_lowercase_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    requires = {
        "runner": [
            "PyYAML>=6.0",
            "httpx[http2]>=0.27",
            "pytest>=8; extra == 'dev'",
            ">=1.0 nameless",
            "Gone-Package>=1",
        ]
    }
    versions = {"PyYAML": "6.0.2", "httpx": "0.28.1", "pytest": "8.0"}

    def fake_requires(name: str) -> list[str]:
        return requires[name]

    def fake_version(name: str) -> str:
        if name not in versions:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(metadata, "requires", fake_requires)
    monkeypatch.setattr(metadata, "version", fake_version)
    assert dependency_versions() == {
        "pyyaml": "6.0.2",
        "httpx": "0.28.1",
        "gone-package": "missing",
    }


def test_no_dependencies_are_listed_when_runner_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> list[str]:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "requires", not_installed)
    assert dependency_versions() == {}


def test_the_installed_runner_lists_its_dependencies() -> None:
    found = dependency_versions()
    assert found["pyyaml"] == metadata.version("pyyaml")
    assert all(name == name.lower() for name in found)


def test_job_json_without_a_report_counts_what_is_on_disk_or_nothing() -> None:
    spec = make_plan().jobs[0]
    record = JobRecord(
        spec=spec, state=State.FAILED, raw_status="error", reason="E42", error="it broke"
    )
    assert outcome_document(record, None) == {
        "id": "job-0",
        "provider": "spidra",
        "type": "scrape",
        "tags": ["pricing"],
        "state": "failed",
        "provider_status": "error",
        "reason": "E42",
        "progress": None,
        "partial": False,
        "results_ready": True,
        "counts": {"items": 0, "files": 0},
        "notes": [],
        "error": "it broke",
        "fingerprint": job_fingerprint(spec),
    }


def test_job_json_extras_never_override_normalized_fields_and_partial_is_either() -> None:
    spec = make_plan().jobs[1]
    record = JobRecord(spec=spec, state=State.SUCCEEDED, progress=1.0, attempt=3)
    report = FetchReport(
        items=5,
        files=1,
        partial=True,
        notes=("2 pages skipped",),
        outcome={"cost": 2, "id": "evil", "state": "failed"},
    )
    document = outcome_document(record, report)
    assert document == {
        "cost": 2,
        "id": "job-1",
        "provider": "spidra",
        "type": "scrape",
        "tags": ["pricing"],
        "state": "succeeded",
        "provider_status": None,
        "reason": None,
        "progress": 1.0,
        "partial": True,
        "results_ready": True,
        "counts": {"items": 5, "files": 1},
        "notes": ["2 pages skipped"],
        "error": None,
        "fingerprint": job_fingerprint(spec),
        "attempt": 3,
        "previous_attempts": ["attempts/job-1/1", "attempts/job-1/2"],
    }
    record.partial = True
    assert outcome_document(record, FetchReport())["partial"] is True


def test_job_json_of_a_first_attempt_names_no_attempts(tmp_path: Path) -> None:
    spec = make_plan().jobs[0]
    batch = BatchDir.create(tmp_path, make_plan(), now=datetime(2026, 1, 1, tzinfo=UTC))
    job = batch.job_dir(spec.id)
    job.append_item({"n": 1})
    job.append_item({"n": 2})
    document = outcome_document(JobRecord(spec=spec, state=State.SUCCEEDED), None, job)
    assert document["counts"] == {"items": 2, "files": 0}
    assert "attempt" not in document
    assert "previous_attempts" not in document


# -- errors: every failed write names its path, its reason and the remedy ---------------------


def test_the_remedy_follows_the_os_or_sqlite_cause() -> None:
    assert remedy_for(OSError(errno.ENOSPC, "No space left on device")) == "free space"
    assert remedy_for(OSError(errno.EIO, "Input/output error")) == "fix that"
    io_error = sqlite3.OperationalError("disk I/O error")
    io_error.sqlite_errorname = "SQLITE_IOERR_WRITE"
    assert remedy_for(io_error) == "check the disk"
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorname = "SQLITE_FULL"
    assert remedy_for(full) == "free space"
    assert remedy_for(RuntimeError("no errno, no SQLite code")) == "fix that"
    assert StoreError("cannot write x").remedy == "fix that"


def test_a_store_error_gives_the_reason_the_message_or_the_type(tmp_path: Path) -> None:
    path = tmp_path / "x"
    assert str(store_error(path, OSError(errno.EROFS, "Read-only file system"))) == (
        f"cannot write {path}: Read-only file system"
    )
    assert str(store_error(path, RuntimeError("boom"))) == f"cannot write {path}: boom"
    assert str(store_error(path, RuntimeError())) == f"cannot write {path}: RuntimeError"


def _refuse_mkdir(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    real = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self == target:
            raise OSError(errno.EROFS, "Read-only file system")
        real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


@pytest.mark.parametrize("where", ["parent", "batch", "jobs"])
def test_a_batch_directory_that_cannot_be_made_names_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    parent = tmp_path / "nightly"
    target = {
        "parent": parent,
        "batch": parent / "20261122T030000Z",
        "jobs": parent / "20261122T030000Z" / "jobs",
    }[where]
    _refuse_mkdir(monkeypatch, target)
    with pytest.raises(StoreError) as caught:
        BatchDir.create(tmp_path, make_plan(), now=START)
    assert str(caught.value) == f"cannot write {target}: Read-only file system"
    assert (caught.value.path, caught.value.remedy) == (target, "make it writable")


def test_latest_that_cannot_be_pointed_names_the_link_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)

    def refuse(src: str, dst: Path) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "symlink", refuse)
    with pytest.raises(StoreError) as caught:
        point_latest(batch.path)
    link = batch.path.parent / "latest"
    assert str(caught.value) == f"cannot write {link}: Read-only file system"
    assert sorted(p.name for p in batch.path.parent.iterdir()) == [batch.path.name]


def test_an_item_stream_that_vanished_before_commit_names_the_results_file(
    tmp_path: Path,
) -> None:
    job = BatchDir.create(tmp_path, make_plan(), now=START).job_dir("job-0")
    job.append_item({"n": 1})
    (job.path / job.STREAM).unlink()
    with pytest.raises(StoreError) as caught:
        job.commit()
    target = job.path / "results.jsonl"
    assert str(caught.value) == f"cannot write {target}: No such file or directory"
    assert caught.value.remedy == "restore that directory"


def test_a_files_directory_that_cannot_be_made_names_it(tmp_path: Path) -> None:
    job = BatchDir.create(tmp_path, make_plan(), now=START).job_dir("job-0")
    job.path.write_bytes(b"a file where the job directory goes")
    with pytest.raises(StoreError) as caught:
        job.write_file("report.pdf", b"%PDF")
    assert str(caught.value) == f"cannot write {job.files_dir}: Not a directory"


# -- ids, times, job directories --------------------------------------------------------------


def test_batch_ids_and_times_are_utc_whatever_the_local_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        paris = datetime(2026, 11, 22, 4, 0, 0, tzinfo=timezone(timedelta(hours=1)))
        assert format_batch_id(paris) == "20261122T030000Z"
        assert iso_utc(paris) == "2026-11-22T03:00:00Z"
        batch = BatchDir.create(tmp_path, make_plan())  # now: the current UTC time
        assert re.fullmatch(r"\d{8}T\d{6}Z", batch.batch_id)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    with pytest.raises(ValueError) as caught:
        format_batch_id(datetime(2026, 11, 22, 3, 0, 0))
    assert str(caught.value) == "batch start time must be timezone-aware"


def test_a_job_directory_is_made_once_per_id_and_knows_its_id(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    job = batch.job_dir("job-0")
    assert batch.job_dir("job-0") is job
    assert batch.job_dir("job-1") is not job
    assert job.job_id == "job-0"


def test_download_temporaries_are_distinct_hidden_names_beside_the_file(tmp_path: Path) -> None:
    target = tmp_path / "files" / "report.pdf"
    first, second = JobDir.temp_for(target), JobDir.temp_for(target)
    assert first != second
    for temp in (first, second):
        assert temp.parent == target.parent
        assert re.fullmatch(rf"\.report\.pdf\.{os.getpid()}\.\d+\.tmp", temp.name)


def test_a_reset_job_counts_nothing(tmp_path: Path) -> None:
    job = BatchDir.create(tmp_path, make_plan(), now=START).job_dir("job-0")
    job.append_item({"n": 1})
    job.write_file("a.txt", b"a")
    job.reset()
    assert (job.items, job.files) == (0, 0)


def test_job_json_without_a_report_counts_the_items_streamed(tmp_path: Path) -> None:
    plan = make_plan()
    job = BatchDir.create(tmp_path, plan, now=START).job_dir("job-0")
    job.append_item({"n": 1})
    job.append_item({"n": 2})
    job.write_file("a.txt", b"a")
    assert outcome_document(JobRecord(spec=plan.jobs[0]), None, job)["counts"] == {
        "items": 2,
        "files": 1,
    }
    job.write_outcome(JobRecord(spec=plan.jobs[0], state=State.SUCCEEDED, attempt=2))
    document = json.loads((job.path / "job.json").read_text("utf-8"))
    assert document["counts"] == {"items": 2, "files": 1}
    assert document["previous_attempts"] == ["attempts/job-0/1"]


def test_an_opened_batch_redacts_its_secrets(tmp_path: Path) -> None:
    created = BatchDir.create(tmp_path, make_plan(), now=START)
    batch = BatchDir.open(created.path, secrets=["sk-live-SECRET"])
    batch.job_dir("job-0").write_status({"echo": "key sk-live-SECRET"})
    status = json.loads((batch.job_dir("job-0").path / "status.json").read_text("utf-8"))
    assert status == {"echo": "key ***"}


@pytest.mark.parametrize("text", [None, "[1, 2]", "{not json"])
def test_batch_json_missing_or_not_an_object_reads_as_none(
    tmp_path: Path, text: str | None
) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    if text is not None:
        (batch.path / "batch.json").write_text(text, "utf-8")
    assert batch.read_info() is None


def test_only_what_seals_the_batch_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = make_plan()
    batch = BatchDir.create(tmp_path, plan, now=START)
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    batch.job_dir("job-0").write_status({"s": 1})
    assert synced == []  # a job's files are not fsynced one by one: only what seals the batch
    batch.write_info(started=START, argv=[], secrets=[], endpoints=Endpoints({}))
    batch.finish(counts={}, exit_code=0, started=START, ended=END, argv=[], secrets=[])
    # The temporaries are fsynced before their rename: one for SHA256SUMS, two for batch.json.
    assert [name.split(".")[1] for name in synced] == ["batch", "SHA256SUMS", "batch"]


# -- verify -----------------------------------------------------------------------------------


def _sealed(tmp_path: Path) -> BatchDir:
    plan = make_plan()
    batch = BatchDir.create(tmp_path, plan, now=START)
    for spec in plan.jobs:
        job = batch.job_dir(spec.id)
        job.write_file("a.txt", b"a")
        job.write_file("b.txt", b"b")
        job.write_outcome(JobRecord(spec=spec, state=State.SUCCEEDED))
    batch.finish(counts={}, exit_code=0, started=START, ended=END, argv=[], secrets=[])
    return batch


NOT_A_LINE = "not a line for a file of the batch (manifest.yaml, inputs/, jobs/ or attempts/)"


def test_sums_lines_that_name_no_file_of_the_batch_are_reported(tmp_path: Path) -> None:
    batch = _sealed(tmp_path)
    sums = batch.path / "SHA256SUMS"
    good = sums.read_text("utf-8")
    digest = "0" * 64
    bad = [f"{digest}  jobs", f"{digest}  jobs//x", f"{digest}  jobs/./x", "garbage"]
    sums.write_text(good + "".join(line + "\n" for line in bad), "utf-8")
    count, problems = check(batch.path)
    first = len(good.splitlines()) + 1
    assert count == len(good.splitlines())
    assert problems == [f"SHA256SUMS:{first + i}: {NOT_A_LINE}" for i in range(4)]


def test_an_unsealed_batch_lists_no_files(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    assert check(batch.path) == (0, ["SHA256SUMS: missing (the batch has not finished)"])
    shutil.rmtree(batch.path / "jobs")
    assert check_job_files(batch.path) == []


def test_every_job_json_is_checked_past_one_without_it_or_a_broken_one(tmp_path: Path) -> None:
    batch = _sealed(tmp_path)
    jobs = batch.path / "jobs"
    (jobs / "a-first").mkdir()  # no job.json yet: skipped
    (jobs / "b-broken").mkdir()
    (jobs / "b-broken" / "job.json").write_text("[]", "utf-8")
    outcome = jobs / "job-0" / "job.json"
    document = json.loads(outcome.read_text("utf-8"))
    outcome.write_text(json.dumps({**document, "counts": ["files", 2]}), "utf-8")
    outcome = jobs / "job-1" / "job.json"
    document = json.loads(outcome.read_text("utf-8"))
    document["files"] = ["a.txt"]
    outcome.write_text(json.dumps({**document, "counts": {"files": 2}}), "utf-8")
    assert check_job_files(batch.path) == [
        "jobs/b-broken/job.json: not a JSON object with a files list",
        "jobs/job-0/job.json: counts.files is None, but it lists 2 files",
        "jobs/job-1/job.json: counts.files is 2, but it lists 1 file",
        "jobs/job-1/files/b.txt: on disk, not listed in jobs/job-1/job.json",
    ]


def test_a_stream_aborted_on_a_full_disk_is_dropped_without_a_second_error(
    tmp_path: Path,
) -> None:
    job = BatchDir.create(tmp_path, make_plan(), now=START).job_dir("job-0")
    job.path.mkdir(parents=True)
    (job.path / job.STREAM).symlink_to("/dev/full")
    job.append_item({"n": 1})  # in the write buffer: closing it meets the full disk
    job.abort()
    assert sorted(p.name for p in job.path.iterdir()) == []
