"""job.json, the files on disk and SHA256SUMS agree; status.json is redacted like job.json.

The end-of-batch sweep deletes runner's own temporaries and nothing a provider named;
`verify` compares each job.json's file list with the disk.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from runner.lifecycle import JobRecord, State
from runner.remote import FetchReport
from runner.store.results import BatchDir, JobDir, _is_debris, check, verify
from runner.store.sanitize import safe_name
from tests.test_results import END, START, make_plan

KEY = "sk-live-SECRET"


def _finish(batch: BatchDir) -> None:
    batch.finish(counts={}, exit_code=0, started=START, ended=END, argv=[], secrets=batch.secrets)


def _succeeded(batch: BatchDir, job: JobDir, files: int) -> None:
    record = JobRecord(spec=make_plan().jobs[0], state=State.SUCCEEDED, raw_status="completed")
    job.write_outcome(record, FetchReport(items=job.items, files=files))


def test_a_provider_document_named_like_a_stream_temporary_survives_the_sweep(
    tmp_path: Path,
) -> None:
    batch = BatchDir.create(tmp_path, make_plan(1), now=START)
    job = batch.job_dir("job-0")
    job.append_item({"n": 1})
    names = ["results.jsonl.part", "a.tmp", ".hidden.tmp", "x.part", "report.pdf"]
    written = sorted(job.write_file(name, b"doc").name for name in names)
    _succeeded(batch, job, files=len(names))
    _finish(batch)
    assert sorted(p.name for p in job.files_dir.iterdir()) == written
    assert (job.path / "results.jsonl").read_bytes() == b'{"n":1}\n'
    document = json.loads((job.path / "job.json").read_text())
    assert document["files"] == written
    assert document["counts"]["files"] == len(names)
    assert check(batch.path) == (8, [])  # 5 files, results.jsonl, job.json, manifest.yaml


def test_the_sweep_removes_every_runner_temporary_and_only_those(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(1), now=START)
    job = batch.job_dir("job-0")
    job.append_item({"n": 1})  # an interrupted stream: never committed
    keep = job.write_file("results.jsonl.part", b"a provider's document")
    download = job.temp_for(job.file_path("big.bin"))
    download.write_bytes(b"half a download")  # the process died before the rename
    (job.path / ".job.json.k3j4.tmp").write_bytes(b"{")  # a write_atomic temporary
    _finish(batch)
    on_disk = sorted(p.relative_to(job.path).as_posix() for p in job.path.rglob("*"))
    assert on_disk == ["files", f"files/{keep.name}"]


def test_a_reopened_job_dir_does_not_count_temporaries_as_files(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(1), now=START)
    job = batch.job_dir("job-0")
    job.write_file("a.pdf", b"a")
    job.temp_for(job.files_dir / "b.pdf").write_bytes(b"half")
    again = JobDir(job.path, "job-0")
    assert again.files == 1
    assert again.file_path("a.pdf").name == "a-2.pdf"  # names on disk are still taken


@given(st.text(max_size=200), st.sets(st.text(max_size=20), max_size=5))
def test_no_provider_name_is_ever_a_runner_temporary(name: str, taken: set[str]) -> None:
    chosen = safe_name(name, taken)
    assert not chosen.startswith(".")
    assert not _is_debris(Path(chosen))


@given(st.text(min_size=1, max_size=60))
def test_every_runner_temporary_is_debris(name: str) -> None:
    final = Path("/x/files") / safe_name(name, set())
    assert _is_debris(JobDir.temp_for(final))
    assert _is_debris(Path("/x") / JobDir.STREAM)


def test_verify_reports_a_file_job_json_lists_that_is_gone(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(1), now=START)
    job = batch.job_dir("job-0")
    job.write_file("a.pdf", b"a")
    job.write_file("b.pdf", b"b")
    _succeeded(batch, job, files=2)
    (job.files_dir / "b.pdf").unlink()  # lost before SHA256SUMS was written
    (job.files_dir / "c.pdf").write_bytes(b"c")  # appeared from nowhere
    _finish(batch)
    assert verify(batch.path) == [
        "jobs/job-0/files/b.pdf: listed in jobs/job-0/job.json, not on disk",
        "jobs/job-0/files/c.pdf: on disk, not listed in jobs/job-0/job.json",
    ]


def test_verify_reports_a_count_that_disagrees_with_the_list(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(1), now=START)
    job = batch.job_dir("job-0")
    job.write_file("a.pdf", b"a")
    _succeeded(batch, job, files=1)
    outcome = job.path / "job.json"
    document = json.loads(outcome.read_text())
    document["counts"]["files"] = 2
    outcome.write_text(json.dumps(document))
    _finish(batch)
    assert verify(batch.path) == [
        "jobs/job-0/job.json: counts.files is 2, but it lists 1 file",
    ]


def test_verify_reports_a_job_json_that_is_not_json(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(1), now=START)
    job = batch.job_dir("job-0")
    job.path.mkdir(parents=True)
    (job.path / "job.json").write_bytes(b"{not json")
    _finish(batch)
    assert verify(batch.path) == ["jobs/job-0/job.json: not a JSON object with a files list"]


def test_job_json_lists_the_files_on_disk_whatever_the_adapter_counted(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(1), now=START)
    job = batch.job_dir("job-0")
    job.write_file("b.pdf", b"b")
    job.write_file("a.pdf", b"a")
    job.file_path("never-downloaded.pdf")  # handed out, then the download failed
    _succeeded(batch, job, files=3)
    document = json.loads((job.path / "job.json").read_text())
    assert (document["files"], document["counts"]["files"]) == (["a.pdf", "b.pdf"], 2)


def test_status_json_is_redacted_in_every_string_keys_included(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(1, key=KEY), now=START)
    job = batch.job_dir("job-0")
    job.write_status(
        {
            "status": f"failed: bad key {KEY}",
            KEY: [f"x{KEY}y", 3, None, {"nested": {"deep": KEY}}],
            "ok": True,
        }
    )
    raw = (job.path / "status.json").read_text()
    assert KEY not in raw
    assert json.loads(raw) == {
        "status": "failed: bad key ***",
        "***": ["x***y", 3, None, {"nested": {"deep": "***"}}],
        "ok": True,
    }


def test_job_json_is_redacted_in_provider_extras_too(tmp_path: Path) -> None:
    batch = BatchDir.create(tmp_path, make_plan(1, key=KEY), now=START)
    job = batch.job_dir("job-0")
    record = JobRecord(spec=make_plan().jobs[0], state=State.FAILED, raw_status=KEY)
    job.write_outcome(record, FetchReport(outcome={"message": f"echo {KEY}", KEY: 1}))
    raw = (job.path / "job.json").read_text()
    assert KEY not in raw
    document = json.loads(raw)
    assert (document["message"], document["***"], document["provider_status"]) == (
        "echo ***",
        1,
        "***",
    )


def test_a_file_name_carrying_a_secret_is_redacted_before_it_reaches_disk(
    tmp_path: Path,
) -> None:
    batch = BatchDir.create(tmp_path, make_plan(1, key=KEY), now=START)
    job = batch.job_dir("job-0")
    path = job.write_file(f"doc-{KEY}.pdf", b"x")
    assert path.name == "doc-___.pdf"
