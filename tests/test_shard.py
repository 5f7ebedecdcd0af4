"""Sharding: sha256(job id) mod N, disjoint and covering (property tests), stable under
reordering, and K/N from the flag, RUNNER_SHARD or JOB_COMPLETION_INDEX; anything set but
malformed is a usage error (exit 2), never "run everything"."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from runner.batch import shard as shards
from runner.batch.shard import Shard
from runner.cli import main
from runner.errors import UsageError
from runner.manifest.loader import load_manifest

ids = st.lists(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=40),
    unique=True,
    max_size=200,
)


@given(job_ids=ids, count=st.integers(min_value=1, max_value=64))
def test_the_shards_are_disjoint_and_cover_every_job(job_ids: list[str], count: int) -> None:
    owned = [
        {job_id for job_id in job_ids if Shard(k, count).owns(job_id)} for k in range(1, count + 1)
    ]
    assert sum(len(part) for part in owned) == len(job_ids)  # disjoint ...
    assert set().union(*owned) == set(job_ids)  # ... and covering


@given(job_ids=ids, count=st.integers(min_value=1, max_value=64), data=st.data())
def test_a_job_keeps_its_shard_whatever_the_order(
    job_ids: list[str], count: int, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(job_ids))
    assert {j: shards.owner(j, count) for j in job_ids} == {
        j: shards.owner(j, count) for j in shuffled
    }


def test_the_owner_is_sha256_of_the_id_mod_n_as_any_other_tool_computes_it() -> None:
    # Fixed values: a change of hash (or Python's salted hash()) would move every job.
    digest = int(hashlib.sha256(b"invoice-17").hexdigest(), 16)
    assert shards.owner("invoice-17", 7) == digest % 7
    assert [shards.owner(f"job-{n}", 4) for n in range(8)] == [
        int(hashlib.sha256(f"job-{n}".encode()).hexdigest(), 16) % 4 for n in range(8)
    ]


def test_the_split_is_balanced_enough_on_many_ids() -> None:
    sizes = [0] * 4
    for n in range(4000):
        sizes[shards.owner(f"row-{n}", 4)] += 1
    assert min(sizes) > 900
    assert max(sizes) < 1100


@pytest.mark.parametrize(
    ("text", "expected"), [("1/4", Shard(1, 4)), (" 4 / 4 ", Shard(4, 4)), ("1/1", Shard(1, 1))]
)
def test_k_of_n_parses_counting_from_one(text: str, expected: Shard) -> None:
    assert shards.parse(text, "--shard") == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty is not K/N"),
        ("  ", "empty is not K/N"),
        ("0/4", "the shard must be 1 to 4"),
        ("5/4", "the shard must be 1 to 4"),
        ("1/0", "the number of shards must be 1"),
        ("2", "'2' is not K/N"),
        ("1/4/2", "is not K/N"),
        ("a/b", "is not K/N"),
        ("-1/4", "is not K/N"),
    ],
)
def test_a_malformed_shard_is_a_usage_error(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        shards.parse(text, "RUNNER_SHARD")


def test_nothing_given_is_an_unsharded_run() -> None:
    assert shards.from_options(None, None, {}) is None
    # a Kubernetes Job that is not split: the index alone shards nothing
    assert shards.from_options(None, None, {"JOB_COMPLETION_INDEX": "3"}) is None


def test_the_flag_the_variable_and_the_kubernetes_index_agree() -> None:
    assert shards.from_options("2/4", None, {}) == Shard(2, 4)
    assert shards.from_options(None, None, {"RUNNER_SHARD": "3/4"}) == Shard(3, 4)
    # JOB_COMPLETION_INDEX counts from 0: index 0 is shard 1
    assert shards.from_options(None, "4", {"JOB_COMPLETION_INDEX": "0"}) == Shard(1, 4)
    assert shards.from_options(None, "4", {"JOB_COMPLETION_INDEX": "3"}) == Shard(4, 4)
    assert shards.from_options("2/4", None, {"RUNNER_SHARD": "2/4"}) == Shard(2, 4)


@pytest.mark.parametrize(
    ("shard", "count", "env", "says"),
    [
        (None, None, {"RUNNER_SHARD": ""}, "RUNNER_SHARD: empty is not K/N"),
        (None, "4", {}, "JOB_COMPLETION_INDEX is not set"),
        (None, "4", {"JOB_COMPLETION_INDEX": ""}, "JOB_COMPLETION_INDEX: empty"),
        (None, "4", {"JOB_COMPLETION_INDEX": "x"}, "'x' is not a job index"),
        (None, "4", {"JOB_COMPLETION_INDEX": "4"}, "the shard must be 1 to 4"),
        (None, "four", {"JOB_COMPLETION_INDEX": "1"}, "'four' is not a number of shards"),
        ("1/4", None, {"RUNNER_SHARD": "2/4"}, "--shard says shard 1/4 but RUNNER_SHARD says 2/4"),
    ],
)
def test_set_but_wrong_is_never_run_everything(
    shard: str | None, count: str | None, env: dict[str, str], says: str
) -> None:
    with pytest.raises(UsageError, match=says):
        shards.from_options(shard, count, env)


def test_a_shard_resumes_only_as_itself() -> None:
    shards.check_resumed_as("d", Shard(2, 4), None)
    shards.check_resumed_as("d", Shard(2, 4), Shard(2, 4))
    with pytest.raises(UsageError, match="d is shard 2/4; it cannot be resumed as shard 3/4"):
        shards.check_resumed_as("d", Shard(2, 4), Shard(3, 4))
    with pytest.raises(UsageError, match="unsharded batch; it cannot be resumed as shard 1/2"):
        shards.check_resumed_as("d", None, Shard(1, 2))


def test_what_batch_json_records_reads_back() -> None:
    document = shards.record(Shard(3, 8), ["a"], [])
    assert document == {"shard": {"index": 3, "count": 8, "only": ["a"], "tags": []}}
    assert shards.recorded(document) == Shard(3, 8)
    assert shards.carry(document) == document
    assert shards.recorded({}) is None
    assert shards.carry(None) == {}
    assert shards.lock_name("nightly", Shard(3, 8)) == "nightly.s3of8"
    assert shards.lock_name("nightly", None) == "nightly"


def _manifest(tmp_path: Path, n: int) -> Path:
    document = {
        "version": 1,
        "name": "split",
        "providers": {"pulse": {"api_key": "${PULSE_API_KEY}"}},
        "jobs": [
            {
                "id": "doc-{n}",
                "provider": "pulse",
                "type": "extract",
                "each": [f"d{i}" for i in range(n)],
                "params": {"file_url": "https://files.example/{item}.pdf"},
            }
        ],
    }
    path = tmp_path / "split.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_select_keeps_plan_order_and_a_reordered_manifest_splits_the_same(tmp_path: Path) -> None:
    plan = load_manifest(_manifest(tmp_path, 30), env={"PULSE_API_KEY": "k"}).plan
    parts = [shards.select(plan, Shard(k, 3)).jobs for k in (1, 2, 3)]
    assert sorted(j.id for part in parts for j in part) == sorted(j.id for j in plan.jobs)
    order = [j.id for j in plan.jobs]
    for part in parts:
        assert [j.id for j in part] == [i for i in order if i in {j.id for j in part}]
    reordered = dataclasses.replace(plan, jobs=tuple(reversed(plan.jobs)))
    again = [{j.id for j in shards.select(reordered, Shard(k, 3)).jobs} for k in (1, 2, 3)]
    assert again == [{j.id for j in part} for part in parts]
    assert shards.select(plan, None) is plan


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--shard", "0/4"], {}, "--shard: 0/4: the shard must be 1 to 4"),
        ([], {"RUNNER_SHARD": ""}, "RUNNER_SHARD: empty is not K/N"),
        (["--shards", "4"], {}, "JOB_COMPLETION_INDEX is not set"),
    ],
)
def test_the_cli_refuses_a_bad_shard_with_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    env: dict[str, str],
    says: str,
) -> None:
    for name in ("RUNNER_SHARD", "JOB_COMPLETION_INDEX"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PULSE_API_KEY", "k")
    out = tmp_path / "results"
    code = main(["run", str(_manifest(tmp_path, 3)), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("runner: "), lines
    assert says in lines[0], lines
    assert not out.exists()  # nothing was created, nothing sent
