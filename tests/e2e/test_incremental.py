"""Incremental runs end to end over real sockets: a second run of an unchanged manifest
sends nothing (the sandbox's books do not move), one changed job is the only one sent,
`--force` and `max_age` send again, a source whose files fail their checksum is not
reused, and the reused batch verifies, resumes and reports like any other."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from runner.batch.reuse import INCREMENTAL, Policy
from runner.batch.run import resume_batch, retry_batch, run_batch
from runner.cli import main
from runner.sandbox.server import RunningSandbox
from runner.store.journal import Journal
from tests.e2e.helpers import manifest, pulse_jobs, sandbox_books, spidra_jobs

pytestmark = pytest.mark.e2e

ENV = {"SPIDRA_API_KEY": "spd_test", "PULSE_API_KEY": "pulse_test"}


class Stream(io.TextIOWrapper):
    """A text stream with a `.buffer`, as commands that write canonical JSON bytes need."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8")

    def getvalue(self) -> str:
        self.flush()
        raw = self.buffer
        assert isinstance(raw, io.BytesIO)
        return raw.getvalue().decode("utf-8")


@contextlib.contextmanager
def captured() -> Iterator[tuple[Stream, Stream]]:
    out, err = Stream(), Stream()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def run_again(
    tmp: Path, path: Path, sandbox: RunningSandbox, policy: Policy | None = INCREMENTAL
) -> tuple[int, str, Path]:
    """Run `path` into tmp/results; (exit code, stderr, the batch this run made)."""
    root = tmp / "results"
    before = set(root.glob("*/2*"))
    stderr = io.StringIO()
    code = run_batch(path, out=root, sandbox=sandbox.origin, env=ENV, stderr=stderr, policy=policy)
    made = set(root.glob("*/2*")) - before
    assert len(made) == 1, made
    return code, stderr.getvalue(), made.pop()


def pulse_manifest(tmp: Path, jobs: int) -> Path:
    return manifest(tmp, [pulse_jobs(jobs)], providers={"pulse": {"api_key": "${PULSE_API_KEY}"}})


def outcome(batch: Path, job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((batch / "jobs" / job_id / "job.json").read_text())
    return data


def submit_counts(sandbox: RunningSandbox, provider: str) -> list[int]:
    return sorted(sandbox_books(sandbox, provider)["submits"].values())


def requests_made(sandbox: RunningSandbox) -> dict[str, dict[str, int]]:
    return {name: dict(books["requests"]) for name, books in sandbox_books(sandbox).items()}


def rewrite(path: Path, change: Any) -> None:
    document = yaml.safe_load(path.read_text())
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_an_unchanged_manifest_run_again_sends_no_request_and_verifies(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    path = manifest(tmp_path, [spidra_jobs(2), pulse_jobs(2)])
    code, _, first = run_again(tmp_path, path, sandbox)
    assert code == 0
    books = requests_made(sandbox)
    assert sum(sum(r.values()) for r in books.values()) > 0

    code, stderr, second = run_again(tmp_path, path, sandbox)

    assert code == 0
    assert requests_made(sandbox) == books  # not one request reached any provider
    assert (
        "runner: 4 of 4 job(s) reused from earlier batches (nothing sent for them); 0 to send"
        in stderr
    )
    for job in ("s-1", "s-2", "p-1", "p-2"):
        again = outcome(second, job)
        assert again["state"] == "succeeded"
        assert again["reused_from"] == {"batch": first.name, "job": job}
        assert again["fingerprint"] == outcome(first, job)["fingerprint"]
        # Same bytes in both batches, and on one filesystem the very same inode.
        for name in ("status.json", "result.json"):
            old, new = first / "jobs" / job / name, second / "jobs" / job / name
            if old.exists():
                assert new.read_bytes() == old.read_bytes()
                assert new.stat().st_ino == old.stat().st_ino
    assert main(["verify", str(second)]) == 0
    info = json.loads((second / "batch.json").read_text())
    assert info["counts"] == {"succeeded": 4}
    assert info["exit_code"] == 0
    assert info["reused_from"] == dict.fromkeys(("p-1", "p-2", "s-1", "s-2"), first.name)
    assert (second.parent / "latest").resolve() == second.resolve()
    with Journal.open(second / "journal.sqlite", readonly=True) as journal:
        events = [(e.job_id, e.event, e.from_state, e.to_state) for e in journal.events()]
        notes = {row.job_id: row.notes for row in journal.rows()}
    assert sorted(events) == sorted(
        (job, "reused", "planned", "succeeded") for job in ("s-1", "s-2", "p-1", "p-2")
    )
    assert notes["p-1"] == {"reused_from": first.name}
    log = [json.loads(line) for line in (second / "log.jsonl").read_text().splitlines()]
    assert log[0]["event"] == "batch.started"
    assert log[0]["counts"] == {"succeeded": 4}  # reused before the engine started
    reused = {e["job_id"]: e["from_batch"] for e in log if e["event"] == "job.reused"}
    assert reused == dict.fromkeys(("s-1", "s-2", "p-1", "p-2"), first.name)

    # `runner status` says so; resume and retry leave reused jobs alone (nothing sent).
    with captured() as (out, _):
        assert main(["status", str(second)]) == 0
    assert out.getvalue().count(f"succeeded (reused from {first.name})") == 4
    assert "4 jobs: 4 succeeded (4 reused)" in out.getvalue()
    with captured() as (out, _):
        assert main(["status", str(second), "--json"]) == 0
    status = json.loads(out.getvalue())
    assert status["reused"] == 4
    assert {job["reused_from"] for job in status["jobs"]} == {first.name}
    assert resume_batch(second, sandbox=sandbox.origin, env=ENV, stderr=io.StringIO()) == 0
    assert retry_batch(second, sandbox=sandbox.origin, env=ENV, stderr=io.StringIO()) == 0
    assert requests_made(sandbox) == books
    assert main(["verify", str(second)]) == 0


def test_one_changed_job_is_the_only_one_sent(tmp_path: Path, sandbox: RunningSandbox) -> None:
    path = pulse_manifest(tmp_path, 3)
    code, _, first = run_again(tmp_path, path, sandbox)
    assert code == 0
    assert submit_counts(sandbox, "pulse") == [1, 1, 1]

    def change(document: dict[str, Any]) -> None:
        document["jobs"][0]["each"][1] = "doc-new"  # p-2 asks for another file now

    rewrite(path, change)
    code, stderr, second = run_again(tmp_path, path, sandbox)

    assert code == 0
    assert "2 of 3 job(s) reused from earlier batches (nothing sent for them); 1 to send" in stderr
    submits = sandbox_books(sandbox, "pulse")["submits"]
    assert sorted(submits.values()) == [1, 1, 1, 1]  # the new request once, no other again
    assert "reused_from" not in outcome(second, "p-2")
    assert outcome(second, "p-2")["fingerprint"] != outcome(first, "p-2")["fingerprint"]
    assert outcome(second, "p-1")["reused_from"]["batch"] == first.name
    assert outcome(second, "p-3")["reused_from"]["batch"] == first.name
    assert main(["verify", str(second)]) == 0

    # A third run reuses p-2 from the second batch, the rest still from the first.
    code, _, third = run_again(tmp_path, path, sandbox)
    assert code == 0
    assert sorted(submits.values()) == sorted(sandbox_books(sandbox, "pulse")["submits"].values())
    assert outcome(third, "p-2")["reused_from"]["batch"] == second.name
    assert outcome(third, "p-1")["reused_from"]["batch"] == first.name


def test_force_sends_again_every_job_or_the_named_ones(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    path = pulse_manifest(tmp_path, 3)
    run_again(tmp_path, path, sandbox)

    code, _, forced_one = run_again(tmp_path, path, sandbox, Policy(force=frozenset({"p-2"})))
    assert code == 0
    assert submit_counts(sandbox, "pulse") == [1, 1, 2]
    assert "reused_from" not in outcome(forced_one, "p-2")
    assert "reused_from" in outcome(forced_one, "p-1")

    code, _, forced_all = run_again(tmp_path, path, sandbox, Policy(force_all=True))
    assert code == 0
    assert submit_counts(sandbox, "pulse") == [2, 2, 3]
    assert not any("reused_from" in outcome(forced_all, j) for j in ("p-1", "p-2", "p-3"))

    # Through the command line: `--force ID` after the manifest, `--force=ID`, `--force`.
    root = str(tmp_path / "results")
    with captured():
        assert main(["run", str(path), "--out", root, "--sandbox", sandbox.origin,
                     "--force=p-1", "--quiet"]) == 0  # fmt: skip
    assert submit_counts(sandbox, "pulse") == [2, 3, 3]
    with captured() as (_, err):
        assert main(["run", str(path), "--out", root, "--sandbox", sandbox.origin,
                     "--force", "nope"]) == 2  # fmt: skip
    assert f"runner: --force nope: no job 'nope' in {path}" in err.getvalue()
    assert submit_counts(sandbox, "pulse") == [2, 3, 3]


def test_max_age_sends_again_what_is_older(tmp_path: Path, sandbox: RunningSandbox) -> None:
    providers = {"pulse": {"api_key": "${PULSE_API_KEY}"}}
    jobs = [pulse_jobs(2), {**pulse_jobs(1, prefix="fresh"), "max_age": "1ms"}]
    jobs[1]["params"] = {"file_url": "https://files.example/fresh-{item}.pdf"}
    path = manifest(tmp_path, jobs, providers=providers)
    run_again(tmp_path, path, sandbox)
    assert submit_counts(sandbox, "pulse") == [1, 1, 1]

    # A job's own max_age: only `fresh-1` is older than it.
    code, _stderr, second = run_again(tmp_path, path, sandbox)
    assert code == 0
    assert submit_counts(sandbox, "pulse") == [1, 1, 2]
    assert "reused_from" not in outcome(second, "fresh-1")
    assert outcome(second, "p-1")["reused_from"]["batch"]

    # `defaults.max_age` for every job; `--max-age` over both.
    def old_defaults(document: dict[str, Any]) -> None:
        document["defaults"]["max_age"] = "1ms"
        del document["jobs"][1]["max_age"]

    rewrite(path, old_defaults)
    run_again(tmp_path, path, sandbox)
    assert submit_counts(sandbox, "pulse") == [2, 2, 3]
    code, _, fourth = run_again(tmp_path, path, sandbox, Policy(max_age=7 * 86400))
    assert code == 0
    assert submit_counts(sandbox, "pulse") == [2, 2, 3]  # younger than 7d: all reused
    assert all("reused_from" in outcome(fourth, j) for j in ("p-1", "p-2", "fresh-1"))


def test_a_source_whose_files_fail_their_checksum_is_not_reused(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    path = pulse_manifest(tmp_path, 2)
    _, _, first = run_again(tmp_path, path, sandbox)
    damaged = next(p for p in (first / "jobs" / "p-1").iterdir() if p.name != "job.json")
    damaged.write_bytes(damaged.read_bytes() + b" ")

    code, stderr, second = run_again(tmp_path, path, sandbox)

    assert code == 0
    rel = f"jobs/p-1/{damaged.name}"
    assert (
        f"runner: p-1: not reusing {first.name}: {rel} changed (sha256 differs); sending it"
        in stderr
    )
    assert submit_counts(sandbox, "pulse") == [1, 2]
    assert "reused_from" not in outcome(second, "p-1")
    assert outcome(second, "p-2")["reused_from"]["batch"] == first.name
    log = [json.loads(line) for line in (second / "log.jsonl").read_text().splitlines()]
    refused = [e for e in log if e["event"] == "job.reuse_refused"]
    assert [(e["job_id"], e["reason"]) for e in refused] == [
        ("p-1", f"{first.name}: {rel} changed (sha256 differs)")
    ]
    assert main(["verify", str(second)]) == 0


def test_an_unfinished_batch_lends_only_jobs_whose_files_match_their_job_json(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    """A batch killed before it was sealed has no SHA256SUMS: a succeeded job there is
    reused when its files are those its job.json lists, and not otherwise."""
    providers = {"skop": {"api_key": "${SKOP_API_KEY}"}}
    job = {
        "id": "k-{n}",
        "provider": "skop",
        "type": "scrape",
        "each": ["a", "b"],
        "params": {"website": "https://{item}.example/", "prompt": "Find the annual reports"},
        "fetch": {"documents": True},
    }
    path = manifest(tmp_path, [job], providers=providers)
    env = {**ENV, "SKOP_API_KEY": "skop_test"}
    stderr = io.StringIO()
    root = tmp_path / "results"
    assert run_batch(path, out=root, sandbox=sandbox.origin, env=env, stderr=stderr) == 0
    first = next(root.glob("*/2*"))
    (first / "SHA256SUMS").unlink()
    files = sorted((first / "jobs" / "k-2" / "files").iterdir())
    assert files, "the sandbox's skop jobs download documents"
    files[0].unlink()

    stderr = io.StringIO()
    assert run_batch(path, out=root, sandbox=sandbox.origin, env=env, stderr=stderr) == 0

    second = max(p for p in root.glob("*/2*") if p != first)
    assert outcome(second, "k-1")["reused_from"]["batch"] == first.name
    assert "reused_from" not in outcome(second, "k-2")
    assert f"k-2: not reusing {first.name}: jobs/k-2/files/{files[0].name} missing" in (
        stderr.getvalue()
    )
    assert submit_counts(sandbox, "skop") == [1, 2]
    assert main(["verify", str(second)]) == 0


def test_results_of_a_sandbox_are_never_reused_by_a_run_against_real_endpoints(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    """A rehearsal is not the real thing: the same jobs sent to a base_url (here the
    sandbox's, named in the manifest as a real provider would be) are sent again."""
    providers = {"pulse": {"api_key": "${PULSE_API_KEY}", "base_url": sandbox.base_urls["pulse"]}}
    path = manifest(tmp_path, [pulse_jobs(2)], providers=providers)
    run_again(tmp_path, path, sandbox)  # --sandbox
    root = tmp_path / "results"
    stderr = io.StringIO()
    assert run_batch(path, out=root, env=ENV, stderr=stderr) == 0  # real endpoints
    assert submit_counts(sandbox, "pulse") == [2, 2]
    stderr = io.StringIO()
    assert run_batch(path, out=root, env=ENV, stderr=stderr) == 0  # the same base_url again
    assert submit_counts(sandbox, "pulse") == [2, 2]
    assert "2 of 2 job(s) reused" in stderr.getvalue()


def test_plan_shows_what_would_be_reused_and_what_would_be_sent(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    path = pulse_manifest(tmp_path, 3)
    _, _, first = run_again(tmp_path, path, sandbox)
    rewrite(path, lambda d: d["jobs"][0]["each"].__setitem__(2, "doc-other"))
    root = str(tmp_path / "results")
    before = requests_made(sandbox)

    with captured() as (out, _):
        assert main(["plan", str(path), "--out", root, "--sandbox"]) == 0
    text = out.getvalue()
    assert "incremental: 2 of 3 jobs reused from earlier batches, 1 to send" in text
    assert f"p-1  reuse  same request succeeded in {first.name}" in text
    assert "p-3  send   no earlier result of this request" in text

    with captured() as (out, _):
        assert main(["plan", str(path), "--out", root, "--sandbox", "--json"]) == 0
    document = json.loads(out.getvalue())
    actions = {c["id"]: c["action"] for c in document["reuse"]}
    assert actions == {"p-1": "reuse", "p-2": "reuse", "p-3": "send"}
    assert document["estimate"]["providers"][0]["jobs"] == 1  # only what will be sent

    with captured() as (out, _):
        assert main(["plan", str(path), "--out", root, "--sandbox", "--force", "--json"]) == 0
    assert {c["action"] for c in json.loads(out.getvalue())["reuse"]} == {"send"}
    # Without --sandbox, sandbox results do not count.
    with captured() as (out, _):
        assert main(["plan", str(path), "--out", root]) == 0
    assert "incremental: 0 of 3 jobs reused from earlier batches, 3 to send" in out.getvalue()
    assert requests_made(sandbox) == before  # planning sends nothing


def test_resume_finishes_a_reuse_a_kill_cut_short(tmp_path: Path, sandbox: RunningSandbox) -> None:
    """Killed after a job's files and job.json were taken but before the journal said so,
    the job is journaled reused on resume (nothing sent); killed before its job.json was
    written, its half-taken files go and the job is sent into an empty directory."""
    path = pulse_manifest(tmp_path, 2)
    _, _, first = run_again(tmp_path, path, sandbox)
    _, _, second = run_again(tmp_path, path, sandbox)
    assert submit_counts(sandbox, "pulse") == [1, 1]
    # The state such kills leave: both jobs planned; p-2 without its job.json.
    with sqlite3.connect(second / "journal.sqlite") as db:
        db.execute("UPDATE jobs SET state = 'planned', notes = NULL, finished_at = NULL")
    (second / "jobs" / "p-2" / "job.json").unlink()
    half_taken = sorted(p.name for p in (second / "jobs" / "p-2").iterdir())
    assert half_taken

    stderr = io.StringIO()
    assert resume_batch(second, sandbox=sandbox.origin, env=ENV, stderr=stderr) == 0

    assert submit_counts(sandbox, "pulse") == [1, 2]  # p-2 sent once more, p-1 not
    assert outcome(second, "p-1")["reused_from"] == {"batch": first.name, "job": "p-1"}
    assert "reused_from" not in outcome(second, "p-2")
    with Journal.open(second / "journal.sqlite", readonly=True) as journal:
        rows = {row.job_id: row for row in journal.rows()}
    assert rows["p-1"].state.value == "succeeded"
    assert rows["p-1"].notes == {"reused_from": first.name}
    assert rows["p-2"].state.value == "succeeded"
    assert rows["p-2"].remote is not None
    assert main(["verify", str(second)]) == 0


def test_where_the_filesystem_refuses_links_the_files_are_copied(
    tmp_path: Path, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = pulse_manifest(tmp_path, 2)
    _, _, first = run_again(tmp_path, path, sandbox)

    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    code, _, second = run_again(tmp_path, path, sandbox)

    assert code == 0
    assert submit_counts(sandbox, "pulse") == [1, 1]
    for job in ("p-1", "p-2"):
        for old in (first / "jobs" / job).rglob("*"):
            if old.is_file() and old.name != "job.json":
                new = second / old.relative_to(first)
                assert new.read_bytes() == old.read_bytes()
                assert new.stat().st_ino != old.stat().st_ino  # a copy, not a link
    log = [json.loads(line) for line in (second / "log.jsonl").read_text().splitlines()]
    taken = [(e["linked"], e["copied"] > 0) for e in log if e["event"] == "job.reused"]
    assert taken == [(0, True), (0, True)]
    assert not list((second / "jobs").rglob(".*"))  # no temporary left behind
    assert main(["verify", str(second)]) == 0
