"""The pure parts of "a batch remembers where it ran": which endpoints a continuation uses,
and the hints printed for it (each a command that works when pasted)."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from runner.batch.run import IN_PROCESS, Hints, choose_endpoints, resume_batch
from runner.errors import ManifestError, UsageError
from runner.manifest.loader import load_manifest
from runner.store.journal import Journal
from runner.store.results import BatchDir, Endpoints

OLD = Endpoints({"pulse": "http://127.0.0.1:8000", "spidra": "http://127.0.0.1:8000/api"})
RESUME = "runner resume results/x/1"


def choose(**kw: object) -> Endpoints:
    args: dict[str, object] = {
        "sandbox": None,
        "overrides": (),
        "remote": {},
        "resume": RESUME,
    }
    args.update(kw)
    return choose_endpoints(OLD, ["pulse", "spidra"], **args)  # type: ignore[arg-type]


def test_without_flags_the_recorded_endpoints_are_used() -> None:
    assert choose(remote={"pulse": 3}) == OLD


def test_a_provider_without_remote_jobs_may_move_while_another_stays() -> None:
    moved = choose(overrides=[("spidra", "http://other/api")], remote={"pulse": 3})
    assert moved.urls == {"pulse": "http://127.0.0.1:8000", "spidra": "http://other/api"}


def test_moving_a_provider_with_one_remote_job_is_refused() -> None:
    with pytest.raises(UsageError) as caught:
        choose(overrides=[("pulse", "http://other")], remote={"pulse": 1})
    assert str(caught.value) == (
        "--endpoint pulse=http://other: 1 pulse job of this batch is at "
        "http://127.0.0.1:8000 (remote ids there, or submits that may have reached it), so "
        f"pulse cannot move; continue where they are with: {RESUME}"
    )


def test_the_same_url_again_is_no_move() -> None:
    same = choose(sandbox="http://127.0.0.1:8000/", remote={"pulse": 2, "spidra": 1})
    assert same.urls == OLD.urls
    assert same.sandbox == "http://127.0.0.1:8000/"


def test_a_new_in_process_sandbox_is_a_move_of_every_provider() -> None:
    with pytest.raises(UsageError, match=r"^--sandbox: 2 spidra jobs"):
        choose(sandbox=IN_PROCESS, remote={"spidra": 2})
    assert choose(sandbox=IN_PROCESS).sandbox == IN_PROCESS


def test_a_batch_that_recorded_nothing_may_be_pointed_anywhere() -> None:
    chosen = choose_endpoints(
        Endpoints({}),
        ["pulse"],
        sandbox="http://127.0.0.1:9000",
        overrides=(),
        remote={"pulse": 4},
        resume=RESUME,
    )
    assert chosen.urls == {"pulse": "http://127.0.0.1:9000"}


def test_hints_quote_paths_and_an_in_process_batch_starts_over(tmp_path: Path) -> None:
    plan = load_manifest(_manifest(tmp_path / "my dir"), sandbox_keys=True).plan
    batch = BatchDir.create(tmp_path / "my results", plan, now=datetime.now(UTC))
    source = str(tmp_path / "my dir" / "m.yaml")
    hints = Hints.of(batch, Endpoints({"pulse": "http://127.0.0.1:1"}, "http://x"), source)
    assert hints.next_step() == f"Continue with: runner resume {shlex.quote(str(batch.path))}"
    assert shlex.split(hints.next_step().split(": ", 1)[1]) == [
        "runner",
        "resume",
        str(batch.path),
    ]
    dead = Hints.of(batch, Endpoints({"pulse": "http://127.0.0.1:1"}, IN_PROCESS), source)
    assert dead.resume is None
    assert dead.next_step() == (
        "The in-process sandbox ended with this run, so this batch cannot be resumed; "
        f"start over with: runner run {shlex.quote(source)} --sandbox "
        f"--out {shlex.quote(str(tmp_path / 'my results'))}"
    )


def _manifest(directory: Path, key: str = "${PULSE_API_KEY}") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "m.yaml"
    document = {
        "version": 1,
        "name": "copy",
        "providers": {"pulse": {"api_key": key}},
        "jobs": [
            {
                "id": "p-1",
                "provider": "pulse",
                "type": "extract",
                "params": {"file_url": "https://x.example/a.pdf"},
            }
        ],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def test_a_problem_found_on_resume_names_the_copy_resume_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULSE_API_KEY", "pulse_copy_key")
    manifest = _manifest(tmp_path)
    plan = load_manifest(manifest).plan
    started = datetime.now(UTC)
    batch = BatchDir.create(tmp_path / "results", plan, now=started)
    batch.write_info(
        started=started,
        argv=[],
        secrets=plan.secrets,
        endpoints=Endpoints({"pulse": plan.providers["pulse"].base_url}),
    )
    journal = Journal.create(batch.journal_path, plan, batch.batch_id)
    journal.set_meta("source", str(manifest))
    journal.close()
    monkeypatch.delenv("PULSE_API_KEY")
    with pytest.raises(ManifestError) as caught:
        resume_batch(batch.path)
    files = {problem.file for problem in caught.value.problems}
    assert files == {str(batch.path / "manifest.yaml")}
