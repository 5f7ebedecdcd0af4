"""The results directory: layout, atomic writes, canonical bytes, SHA256SUMS and verify."""

from __future__ import annotations

import errno
import filecmp
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from runner.errors import NotABatchDirError, StoreError
from runner.fingerprint import job_fingerprint
from runner.lifecycle import JobRecord, State
from runner.plan import JobSpec, Limits, Plan, PollPolicy, ProviderSettings, Secret
from runner.remote import FetchReport
from runner.store import jsonio
from runner.store.results import BatchDir, check, verify

MANIFEST = b"# the manifest, exactly as read\nversion: 1\nname: nightly\n"
START = datetime(2026, 11, 22, 3, 0, 0, tzinfo=UTC)
END = datetime(2026, 11, 22, 3, 5, 7, tzinfo=UTC)


def make_plan(n: int = 2, *, name: str = "nightly", key: str = "sk-live-SECRET") -> Plan:
    settings = ProviderSettings(
        name="spidra",
        base_url="http://127.0.0.1:1/spidra",
        api_key=Secret(key),
        api_key_var="SPIDRA_API_KEY",
        limits=Limits(),
        poll=PollPolicy(2.0, 60.0, 1.5),
        timeout=1800.0,
    )
    jobs = tuple(
        JobSpec(
            id=f"job-{i}",
            provider="spidra",
            type="scrape",
            params={"urls": [{"url": f"https://example.test/{i}"}]},
            tags=("pricing",),
            index=i,
        )
        for i in range(n)
    )
    return Plan(
        name=name,
        source=Path("manifests/nightly.yaml"),
        manifest_bytes=MANIFEST,
        manifest_sha256=hashlib.sha256(MANIFEST).hexdigest(),
        providers={"spidra": settings},
        jobs=jobs,
        secrets=(Secret(key),),
    )


def _succeed(batch: BatchDir, spec: JobSpec, *, items: int = 3) -> None:
    job = batch.job_dir(spec.id)
    for i in range(items):
        job.append_item({"n": i, "title": f"item {i}", "é": "ü"})
    job.write_file("report.pdf", b"%PDF-1.7 fake")
    job.write_file("report.pdf", b"%PDF-1.7 second")
    job.write_status({"status": "completed", "jobId": "remote-123"})
    record = JobRecord(spec=spec, state=State.SUCCEEDED, raw_status="completed", progress=1.0)
    record.remote = None
    job.write_outcome(record, FetchReport(items=items, files=2, outcome={"cost": 2}))


def _run(root: Path, *, now: datetime = START) -> BatchDir:
    plan = make_plan()
    batch = BatchDir.create(root, plan, now=now)
    for spec in plan.jobs:
        _succeed(batch, spec)
    batch.finish(
        counts={"succeeded": 2},
        exit_code=0,
        started=now,
        ended=END,
        argv=["runner", "run", "m.yaml", "--key=sk-live-SECRET"],
        secrets=plan.secrets,
        remote_ids={"job-0": "remote-123"},
    )
    return batch


def _tree(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*"))


def test_create_lays_out_batch_dir_and_copies_manifest_exactly(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    assert batch.path == tmp_path / "nightly" / "20261122T030000Z"
    assert batch.batch_id == "20261122T030000Z"
    assert (batch.path / "manifest.yaml").read_bytes() == MANIFEST
    assert (batch.path / "jobs").is_dir()


def test_create_numbers_a_taken_batch_id(tmp_path: Path) -> None:
    first = BatchDir.create(tmp_path, make_plan(), now=START)
    second = BatchDir.create(tmp_path, make_plan(), now=START)
    third = BatchDir.create(tmp_path, make_plan(), batch_id="20261122T030000Z")
    assert [first.batch_id, second.batch_id, third.batch_id] == [
        "20261122T030000Z",
        "20261122T030000Z-2",
        "20261122T030000Z-3",
    ]


def test_open_refuses_a_directory_that_is_not_a_batch(tmp_path: Path) -> None:
    with pytest.raises(NotABatchDirError) as info:
        BatchDir.open(tmp_path)
    assert str(info.value) == (
        f"{tmp_path} is not a batch directory (no manifest.yaml); give "
        "results/<name>/<batch-id>, results/<name>/latest or results/<name>"
    )


def test_job_ids_that_could_escape_are_refused(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    for bad in ("..", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="cannot name a directory"):
            batch.job_dir(bad)


def test_finished_batch_has_the_designed_files_and_canonical_json(tmp_path: Path) -> None:
    batch = _run(tmp_path)
    assert _tree(batch.path) == [
        "SHA256SUMS",
        "batch.json",
        "jobs",
        "jobs/job-0",
        "jobs/job-0/files",
        "jobs/job-0/files/report-2.pdf",
        "jobs/job-0/files/report.pdf",
        "jobs/job-0/job.json",
        "jobs/job-0/results.jsonl",
        "jobs/job-0/status.json",
        "jobs/job-1",
        "jobs/job-1/files",
        "jobs/job-1/files/report-2.pdf",
        "jobs/job-1/files/report.pdf",
        "jobs/job-1/job.json",
        "jobs/job-1/results.jsonl",
        "jobs/job-1/status.json",
        "manifest.yaml",
    ]
    job_json = (batch.path / "jobs/job-0/job.json").read_bytes()
    assert job_json == jsonio.canonical_json(json.loads(job_json))
    assert json.loads(job_json) == {
        "cost": 2,
        "counts": {"files": 2, "items": 3},
        "error": None,
        "files": ["report-2.pdf", "report.pdf"],
        "fingerprint": job_fingerprint(make_plan().jobs[0]),
        "id": "job-0",
        "notes": [],
        "partial": False,
        "progress": 1.0,
        "provider": "spidra",
        "provider_status": "completed",
        "reason": None,
        "results_ready": True,
        "state": "succeeded",
        "tags": ["pricing"],
        "type": "scrape",
    }
    lines = (batch.path / "jobs/job-0/results.jsonl").read_text("utf-8").splitlines()
    assert lines[0] == '{"n":0,"title":"item 0","é":"ü"}'
    assert len(lines) == 3
    assert (batch.path / "jobs/job-0/files/report-2.pdf").read_bytes() == b"%PDF-1.7 second"


def test_job_json_holds_no_remote_ids_timestamps_or_attempts(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    spec = make_plan().jobs[0]
    record = JobRecord(spec=spec, state=State.FAILED, raw_status="failed", reason="E42")
    record.attempts, record.polls = 3, 9
    record.submitted_at, record.finished_at, record.next_poll_at = 1.0, 2.0, 3.0
    record.error = "the provider failed the job: E42"
    batch.job_dir(spec.id).write_outcome(record, None)
    document = json.loads((batch.path / "jobs/job-0/job.json").read_text())
    assert set(document) == {
        "id",
        "provider",
        "type",
        "tags",
        "state",
        "provider_status",
        "reason",
        "progress",
        "partial",
        "results_ready",
        "counts",
        "notes",
        "error",
        "files",
        "fingerprint",  # what the job asked, the same in every run (runner.fingerprint)
    }
    assert document["state"] == "failed"
    assert document["error"] == "the provider failed the job: E42"


def test_provider_extras_never_override_normalized_fields(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    spec = make_plan().jobs[0]
    record = JobRecord(spec=spec, state=State.SUCCEEDED)
    report = FetchReport(outcome={"state": "hacked", "done_reason_desc": "all done"})
    batch.job_dir(spec.id).write_outcome(record, report)
    document = json.loads((batch.path / "jobs/job-0/job.json").read_text())
    assert document["state"] == "succeeded"
    assert document["done_reason_desc"] == "all done"


def test_two_runs_with_the_same_answers_give_identical_jobs_trees(tmp_path: Path) -> None:
    first = _run(tmp_path / "a")
    second = _run(tmp_path / "b", now=datetime(2027, 1, 1, tzinfo=UTC))
    comparison = filecmp.dircmp(first.jobs_path, second.jobs_path)

    def differences(cmp: filecmp.dircmp[str]) -> list[str]:
        found = cmp.left_only + cmp.right_only + cmp.diff_files + cmp.funny_files
        for sub in cmp.subdirs.values():
            found += differences(sub)
        return found

    assert differences(comparison) == []
    for rel in _tree(first.jobs_path):
        if (first.jobs_path / rel).is_file():
            assert (first.jobs_path / rel).read_bytes() == (second.jobs_path / rel).read_bytes()
    assert (first.path / "SHA256SUMS").read_bytes() == (second.path / "SHA256SUMS").read_bytes()


def test_item_stream_is_invisible_until_committed(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    job = batch.job_dir("job-0")
    job.append_item({"a": 1})
    assert not (job.path / "results.jsonl").exists()
    assert (job.path / job.STREAM).exists()
    job.commit()
    assert (job.path / "results.jsonl").read_bytes() == b'{"a":1}\n'
    assert not (job.path / job.STREAM).exists()


def test_failed_job_drops_its_half_written_stream(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    spec = make_plan().jobs[0]
    job = batch.job_dir(spec.id)
    job.append_item({"a": 1})
    job.write_outcome(JobRecord(spec=spec, state=State.FAILED, error="fetch failed"), None)
    assert sorted(p.name for p in job.path.iterdir()) == ["job.json"]


def test_reset_clears_partial_output_for_a_refetch(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    job = batch.job_dir("job-0")
    job.write_file("a.pdf", b"x")
    job.append_item({"a": 1})
    job.write_result({"r": 1})
    job.reset()
    assert not job.path.exists()
    assert job.file_path("a.pdf").name == "a.pdf"  # the name is free again
    assert job.items == 0


def test_reopened_job_dir_never_reuses_a_file_name_on_disk(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    batch.job_dir("job-0").write_file("a.pdf", b"x")
    again = BatchDir.open(batch.path).job_dir("job-0")
    assert again.file_path("A.pdf").name == "A-2.pdf"
    assert again.files == 2


def test_file_path_sanitizes_names_from_provider_data(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    job = batch.job_dir("job-0")
    path = job.file_path("../../etc/passwd")
    assert path.parent == job.path / "files"
    assert path.name == "_.._etc_passwd"


def test_writer_crash_leaves_no_partial_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    job = batch.job_dir("job-0")
    job.write_result({"version": 1})

    class Unserializable:
        pass

    with pytest.raises(TypeError):
        job.write_result({"version": 2, "bad": Unserializable()})
    assert json.loads((job.path / "result.json").read_text()) == {"version": 1}
    assert sorted(p.name for p in job.path.iterdir()) == ["result.json"]


def _full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every atomic write goes to /dev/full: the kernel answers ENOSPC."""

    def fdopen(fd: int, mode: str) -> Any:
        os.close(fd)
        return open("/dev/full", mode)

    monkeypatch.setattr(jsonio.os, "fdopen", fdopen)


def test_full_disk_raises_a_clear_error_naming_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    job = batch.job_dir("job-0")
    job.write_status({"status": "v1"})
    _full_disk(monkeypatch)
    with pytest.raises(StoreError) as info:
        job.write_status({"status": "v2"})
    target = job.path / "status.json"
    assert str(info.value) == f"cannot write {target}: No space left on device"
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.ENOSPC
    assert json.loads(target.read_text()) == {"status": "v1"}
    assert sorted(p.name for p in job.path.iterdir()) == ["status.json"]


def test_full_disk_while_streaming_items_names_the_path(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    job = batch.job_dir("job-0")
    job.path.mkdir(parents=True)
    (job.path / job.STREAM).symlink_to("/dev/full")
    job.append_item({"i": 0, "pad": "x" * 100})  # still in the write buffer
    with pytest.raises(StoreError) as info:  # past the buffer, the kernel is asked
        job.append_item({"pad": "x" * 100_000})
    assert str(info.value) == (f"cannot write {job.path / job.STREAM}: No space left on device")
    assert not (job.path / "results.jsonl").exists()


def test_sums_are_sha256sum_format_sorted_and_cover_the_manifest_and_every_job_file(
    tmp_path: Path,
) -> None:
    batch = _run(tmp_path)
    lines = (batch.path / "SHA256SUMS").read_text().splitlines()
    paths = [line.split("  ", 1)[1] for line in lines]
    assert paths == sorted(paths)
    assert len(paths) == 11
    assert paths[-1] == "manifest.yaml"
    for line in lines:
        digest, rel = line.split("  ", 1)
        assert hashlib.sha256((batch.path / rel).read_bytes()).hexdigest() == digest
    assert check(batch.path) == (11, [])


def test_sums_cover_the_input_copies_and_batch_json_records_them(tmp_path: Path) -> None:
    plan = make_plan()
    batch = BatchDir.create(tmp_path, plan, now=START)
    (batch.path / "inputs").mkdir()
    (batch.path / "inputs/items.csv").write_bytes(b"url\nhttps://a.example/\n")
    record = {"data/items.csv": {"copy": "inputs/items.csv", "sha256": "ab" * 32}}
    batch.inputs = record
    batch.finish(counts={}, exit_code=0, started=START, ended=END, argv=[], secrets=())
    digest = hashlib.sha256(b"url\nhttps://a.example/\n").hexdigest()
    manifest = hashlib.sha256(MANIFEST).hexdigest()
    assert (batch.path / "SHA256SUMS").read_text() == (
        f"{digest}  inputs/items.csv\n{manifest}  manifest.yaml\n"
    )
    assert json.loads((batch.path / "batch.json").read_text())["inputs"] == record


def test_finish_sweeps_debris_of_interrupted_writes(tmp_path: Path) -> None:
    plan = make_plan()
    batch = BatchDir.create(tmp_path, plan, now=START)
    job = batch.job_dir("job-0")
    job.append_item({"a": 1})  # never committed: the fetch was interrupted
    job.path.joinpath(".result.json.abc123.tmp").write_bytes(b"{")
    batch.finish(counts={}, exit_code=1, started=START, ended=END, argv=[], secrets=plan.secrets)
    assert sorted(p.name for p in job.path.iterdir()) == []
    assert (batch.path / "SHA256SUMS").read_text() == (
        f"{hashlib.sha256(MANIFEST).hexdigest()}  manifest.yaml\n"  # and nothing under jobs/
    )


def test_verify_reports_changed_missing_and_extra_files(tmp_path: Path) -> None:
    batch = _run(tmp_path)
    assert verify(batch.path) == []
    (batch.path / "jobs/job-0/results.jsonl").write_bytes(b'{"n":0}\n')
    (batch.path / "jobs/job-1/status.json").unlink()
    (batch.path / "jobs/job-1/files/sneaky.bin").write_bytes(b"!")
    assert verify(batch.path) == [
        "jobs/job-0/results.jsonl: changed (sha256 differs)",
        "jobs/job-1/files/sneaky.bin: not listed in SHA256SUMS",
        "jobs/job-1/status.json: missing",
        "jobs/job-1/files/sneaky.bin: on disk, not listed in jobs/job-1/job.json",
    ]


def test_verify_rejects_sum_lines_pointing_outside_what_it_covers(tmp_path: Path) -> None:
    batch = _run(tmp_path)
    sums = batch.path / "SHA256SUMS"
    bad = ["jobs/../../etc/passwd", "inputs/../journal.sqlite", "batch.json", "./manifest.yaml"]
    sums.write_text(sums.read_text() + "".join(f"{'0' * 64}  {rel}\n" for rel in bad))
    assert verify(batch.path) == [
        f"SHA256SUMS:{n}: not a line for a file of the batch "
        "(manifest.yaml, inputs/, jobs/ or attempts/)"
        for n in range(12, 16)
    ]


def test_verify_reports_an_edited_manifest_and_a_missing_or_extra_input(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    (batch.path / "inputs").mkdir()
    (batch.path / "inputs/a.txt").write_bytes(b"one\n")
    batch.finish(counts={}, exit_code=0, started=START, ended=END, argv=[], secrets=())
    assert verify(batch.path) == []
    (batch.path / "manifest.yaml").write_bytes(MANIFEST + b"jobs: []\n")
    (batch.path / "inputs/a.txt").unlink()
    (batch.path / "inputs/b.txt").write_bytes(b"two\n")
    assert verify(batch.path) == [
        "inputs/a.txt: missing",
        "inputs/b.txt: not listed in SHA256SUMS",
        "manifest.yaml: changed (sha256 differs)",
    ]


def test_verify_of_an_unfinished_batch_says_so(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(), now=START)
    assert verify(batch.path) == ["SHA256SUMS: missing (the batch has not finished)"]


def test_batch_json_records_run_facts_with_secrets_redacted(tmp_path: Path) -> None:
    batch = _run(tmp_path)
    raw = (batch.path / "batch.json").read_text("utf-8")
    assert "sk-live-SECRET" not in raw
    document = json.loads(raw)
    assert document["argv"] == ["runner", "run", "m.yaml", "--key=***"]
    assert document["manifest_sha256"] == hashlib.sha256(MANIFEST).hexdigest()
    assert document["started"] == "2026-11-22T03:00:00Z"
    assert document["ended"] == "2026-11-22T03:05:07Z"
    assert document["counts"] == {"succeeded": 2}
    assert document["exit_code"] == 0
    assert document["remote_ids"] == {"job-0": "remote-123"}
    assert document["inputs"] == {}  # no `each` file
    assert document["runner_version"] == "0.1.0"
    assert "structlog" in document["dependencies"]
    assert "pytest" not in document["dependencies"]  # dev extras are not run facts


def test_latest_points_at_the_newest_finished_batch(tmp_path: Path) -> None:
    first = _run(tmp_path)
    latest = tmp_path / "nightly" / "latest"
    assert os.readlink(latest) == first.batch_id
    second = _run(tmp_path, now=datetime(2026, 11, 23, 3, 0, tzinfo=UTC))
    assert os.readlink(latest) == "20261123T030000Z"
    assert latest.resolve() == second.path.resolve()
    assert not [p for p in (tmp_path / "nightly").iterdir() if p.name.endswith(".tmp")]


def test_secrets_never_reach_job_json(tmp_path: Path) -> None:
    plan = make_plan(1, key="sk-live-SECRET")
    batch = BatchDir.create(tmp_path, plan, now=START)
    record = JobRecord(spec=plan.jobs[0], state=State.FAILED, reason="key sk-live-SECRET")
    record.error = "401 for key sk-live-SECRET"
    report = FetchReport(notes=("retried with sk-live-SECRET",))
    batch.job_dir("job-0").write_outcome(record, report)
    document = json.loads((batch.path / "jobs/job-0/job.json").read_text())
    assert (document["error"], document["reason"], document["notes"]) == (
        "401 for key ***",
        "key ***",
        ["retried with ***"],
    )


def test_download_temp_names_are_swept_by_finish(tmp_path: Path) -> None:
    plan = make_plan(1)
    batch = BatchDir.create(tmp_path, plan, now=START)
    job = batch.job_dir("job-0")
    final = job.file_path("big.bin")
    temp = job.temp_for(final)
    assert temp.parent == final.parent
    assert temp.name.startswith(".big.bin.")
    temp.write_bytes(b"half a download")  # the process died before the rename
    batch.finish(counts={}, exit_code=1, started=START, ended=END, argv=[], secrets=())
    assert list(job.files_dir.iterdir()) == []
