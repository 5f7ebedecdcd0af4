"""`expect:` and `budget:`: read from the manifest (every problem located), the expectation
check over a job's files, the spend-cap bookkeeping and whether a plan fits its caps."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import IO

import pytest

from runner.batch.budget import describe, fits, require_fit
from runner.batch.expect import check, failed_count
from runner.batch.notify import exit_code_of, summarize
from runner.commands.run import without_ping
from runner.engine.budget import Spending, already_sent, cost_of
from runner.errors import LockHeldError, ManifestError, UsageError
from runner.lifecycle import JobRecord
from runner.manifest.loader import LoadedManifest, parse_manifest
from runner.plan import Budget, Expect, JobSpec
from runner.remote import FetchReport

ENV = {"PULSE_API_KEY": "pk-secret-1", "LOBSTR_API_KEY": "lk-secret-2"}
HEAD = """\
version: 1
name: unit
providers:
  pulse: {api_key: "${PULSE_API_KEY}"}
  lobstr: {api_key: "${LOBSTR_API_KEY}", budget: {jobs: 1, credits: 2.5}}
"""
JOB = "  - {id: a, provider: pulse, type: extract, params: {file_url: 'https://x.example/a'}"


def parse(text: str, files: dict[str, bytes] | None = None) -> LoadedManifest:
    def opener(path: Path) -> IO[bytes]:
        if files is None or path.name not in files:
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return io.BytesIO(files[path.name])

    return parse_manifest(text.encode(), source=Path("m.yaml"), env=ENV, opener=opener)


def problems(text: str, files: dict[str, bytes] | None = None) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        parse(text, files)
    return [p.render() for p in caught.value.problems]


# -- the manifest ----------------------------------------------------------------------------


def test_job_expect_keys_override_the_defaults_key_by_key_and_a_file_is_an_input() -> None:
    text = (
        HEAD
        + "defaults:\n  expect: {min_items: 2, schema: item.json, max_failed_share: 0.1}\n"
        + "budget: {jobs: 7}\njobs:\n"
        + JOB
        + ", expect: {min_items: 5}}\n"
        + "  - {id: b, provider: pulse, type: extract, params: {file_url: 'https://x.example/b'}}\n"
    )
    loaded = parse(text, {"item.json": b'{"type": "object"}'})
    a, b = loaded.plan.jobs
    assert a.expect == Expect(
        min_items=5, schema_source="item.json", max_failed_share=0.1
    )  # the schema itself is not compared
    assert a.expect is not None
    assert a.expect.schema == {"type": "object"}
    assert b.expect is not None
    assert b.expect.min_items == 2
    assert [f.written for f in loaded.inputs] == ["item.json"]
    assert loaded.plan.budget == Budget(jobs=7)
    assert loaded.plan.providers["lobstr"].budget == Budget(jobs=1, credits=2.5)
    assert loaded.plan.providers["pulse"].budget == Budget()


def test_no_expect_anywhere_means_none() -> None:
    assert parse(HEAD + "jobs:\n" + JOB + "}\n").plan.jobs[0].expect is None


def test_a_missing_invalid_or_non_json_schema_is_reported_where_it_is_named() -> None:
    text = (
        HEAD
        + "jobs:\n"
        + JOB
        + ", expect: {schema: missing.json}}\n"
        + "  - {id: b, provider: pulse, type: extract, params: {file_url: 'https://x.example/b'},"
        + " expect: {schema: bad.json}}\n"
        + "  - {id: c, provider: pulse, type: extract, params: {file_url: 'https://x.example/c'},"
        + " expect: {schema: text.json}}\n"
        + "  - {id: d, provider: pulse, type: extract, params: {file_url: 'https://x.example/d'},"
        + " expect: {schema: {minLength: -1}, min_items: -2}}\n"
    )
    found = problems(text, {"bad.json": b'{"type": 12}', "text.json": b"not json"})
    assert found == [
        "m.yaml:7:105: jobs[0] (id: a).expect.schema: 'missing.json': cannot read the schema "
        "file: No such file or directory",
        "m.yaml:8:105: jobs[1] (id: b).expect.schema: 'bad.json' is not a valid JSON Schema: "
        "12 is not valid under any of the given schemas at type",
        "m.yaml:9:105: jobs[2] (id: c).expect.schema: 'text.json' is not JSON: Expecting "
        "value: line 1 column 1 (char 0)",
        "m.yaml:10:105: jobs[3] (id: d).expect.schema: the inline schema is not a valid JSON "
        "Schema: -1 is less than the minimum of 0 at minLength",
        "m.yaml:10:133: jobs[3] (id: d).expect.min_items: -2 is less than the minimum of 0",
    ]


def test_a_credit_cap_on_a_provider_that_reports_no_cost_is_refused() -> None:
    text = HEAD.replace('"${PULSE_API_KEY}"}', '"${PULSE_API_KEY}", budget: {credits: 5}}') + (
        "jobs:\n" + JOB + "}\n"
    )
    assert problems(text) == [
        "m.yaml:4:58: providers.pulse.budget.credits: Pulse reports no cost per job, so a "
        "credit cap cannot be kept; cap its jobs instead (budget.jobs)"
    ]


def test_budget_keys_are_checked_by_the_schema() -> None:
    text = HEAD + "budget: {jobs: 2, credits: 3}\njobs:\n" + JOB + "}\n"
    assert problems(text) == [
        "m.yaml:6:19: budget: unknown key 'credits' (valid: jobs)",
    ]


# -- the check -------------------------------------------------------------------------------


def write_items(directory: Path, items: list[object]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))


def test_min_items_and_min_files(tmp_path: Path) -> None:
    expect = Expect(min_items=1)
    assert check(expect, FetchReport(items=0), tmp_path) == (
        "completed with 0 results; expected at least 1"
    )
    assert check(expect, FetchReport(items=1), tmp_path) is None
    files = tmp_path / "files"
    files.mkdir()
    (files / "a.md").write_text("x")
    assert check(Expect(min_files=2), FetchReport(files=5), tmp_path) == (
        "completed with 1 file; expected at least 2"  # what is on disk, not what was said
    )


def test_failed_items_against_the_allowed_share(tmp_path: Path) -> None:
    report = FetchReport(items=4, outcome={"failed_results": 1})
    assert check(Expect(), report, tmp_path) == (
        "completed with 1 of 4 items failed (25%); expected at most 0% failed "
        "(expect.max_failed_share)"
    )
    assert check(Expect(max_failed_share=0.25), report, tmp_path) is None
    assert failed_count({"failed_items": 2, "failed_pages": 1}) == 3
    assert failed_count({"pages": 3}) is None
    assert failed_count({"failed_items": True}) is None


def test_every_item_is_checked_against_the_schema(tmp_path: Path) -> None:
    write_items(tmp_path, [{"price": 1}, {"price": "x"}, {}, {"price": 3}])
    expect = Expect(
        schema={"required": ["price"], "properties": {"price": {"type": "number"}}},
        schema_source="price.json",
    )
    assert check(expect, FetchReport(items=4), tmp_path) == (
        "2 of 4 result items do not match expect.schema (price.json); first: "
        "results.jsonl item 2: 'x' is not of type 'number' at price"
    )
    (tmp_path / "results.jsonl").unlink()
    (tmp_path / "result.json").write_text('{"price": 2}')
    assert check(expect, FetchReport(items=1), tmp_path) is None


# -- spending --------------------------------------------------------------------------------


def spec(job_id: str, provider: str = "lobstr") -> JobSpec:
    return JobSpec(id=job_id, provider=provider, type="run", params={})


def plan_with(batch: Budget, lobstr: Budget) -> LoadedManifest:
    jobs = "jobs:\n" + "".join(
        f"  - {{id: r{i}, provider: lobstr, type: run, params: {{squid: "
        f"'0123456789abcdef0123456789abcdef'}}}}\n"
        for i in range(3)
    )
    text = HEAD.replace("{jobs: 1, credits: 2.5}", _budget(lobstr))
    if batch.jobs is not None:
        text += f"budget: {{jobs: {batch.jobs}}}\n"
    return parse(text + jobs)


def _budget(budget: Budget) -> str:
    parts = [f"jobs: {budget.jobs}"] if budget.jobs is not None else []
    parts += [f"credits: {budget.credits}"] if budget.credits is not None else []
    return "{" + ", ".join(parts) + "}"


def test_a_job_counts_once_per_attempt_and_the_cap_refuses_the_next() -> None:
    plan = plan_with(Budget(), Budget(jobs=2)).plan
    spending = Spending(plan, cost_fields={"lobstr": "credit_used"})
    first, second, third = (JobRecord(spec(f"r{i}")) for i in range(3))
    for record in (first, first, second):  # a deferred submit sent again counts once
        assert spending.refuse(record) is None
        spending.count(record)
    assert spending.sent == {"lobstr": 2}
    refusal = spending.refuse(third)
    assert refusal is not None
    assert refusal.provider == "lobstr"
    assert refusal.reason == (
        "budget: lobstr reached its cap of 2 submitted jobs "
        "(providers.lobstr.budget.jobs); not submitted"
    )
    assert spending.refuse(first) is None  # already out: may exist remotely
    first.attempt = 2  # `runner retry`: a new attempt is a new submit
    assert spending.refuse(first) is not None


def test_the_batch_cap_counts_every_provider() -> None:
    plan = plan_with(Budget(jobs=1), Budget()).plan
    spending = Spending(plan, cost_fields={}, sent={"pulse": 1})
    refusal = spending.refuse(JobRecord(spec("r0")))
    assert refusal is not None
    assert refusal.provider is None
    assert "the batch reached its cap of 1 submitted jobs (budget.jobs)" in refusal.reason


def test_credits_are_charged_from_what_finished_jobs_report() -> None:
    plan = plan_with(Budget(), Budget(credits=3)).plan
    spending = Spending(plan, cost_fields={"lobstr": "credit_used"}, spent={"lobstr": 1.0})
    assert spending.charge("lobstr", {"credit_used": 1.5}) is None
    refusal = spending.charge("lobstr", {"credit_used": "0.5"})  # a decimal string counts too
    assert refusal is not None
    assert refusal.reason == (
        "budget: lobstr reached its cap of 3 credits (3 reported; "
        "providers.lobstr.budget.credits); not submitted"
    )
    assert spending.refuse(JobRecord(spec("r9"))) is not None
    assert cost_of({"credit_used": None}, "credit_used") == 0.0
    assert cost_of({"credit_used": True}, "credit_used") == 0.0
    assert cost_of({"cost_usd": 0.2}, None) == 0.0


def test_already_sent_counts_earlier_attempts_and_a_sent_current_one() -> None:
    fresh, sent, retried = JobRecord(spec("a")), JobRecord(spec("b")), JobRecord(spec("c"))
    sent.attempts = 1
    retried.attempt = 3  # two attempts before this one, which was not sent yet
    assert already_sent([fresh, sent, retried]) == {"lobstr": 3}


def test_a_plan_that_cannot_fit_names_the_cap_and_allow_partial_accepts_it() -> None:
    plan = plan_with(Budget(jobs=5), Budget(jobs=2)).plan
    assert [(f.scope, f.planned, f.cap, f.fits) for f in fits(plan)] == [
        ("lobstr", 3, 2, False),
        ("batch", 3, 5, True),
    ]
    assert describe(plan) == [
        "  lobstr: 3 jobs planned, cap 2 (DOES NOT FIT: 1 would be skipped)",
        "  batch: 3 jobs planned, cap 5 (fits)",
    ]
    with pytest.raises(UsageError, match=r"providers\.lobstr\.budget\.jobs: lobstr has 3"):
        require_fit(plan, allow_partial=False)
    require_fit(plan, allow_partial=True)


# -- the summary ------------------------------------------------------------------------------


def test_the_summary_without_a_batch_and_the_exit_codes_of_failures() -> None:
    assert summarize(None, 2, error="bad")["batch_dir"] is None
    assert exit_code_of(UsageError("x")) == 2
    assert exit_code_of(ManifestError([])) == 2
    assert exit_code_of(LockHeldError("held")) == 4
    assert exit_code_of(KeyboardInterrupt()) == 130
    assert exit_code_of(RuntimeError("bug")) == 3


def test_the_ping_url_is_not_kept_in_argv() -> None:
    argv = ["runner", "run", "m.yaml", "--ping", "https://hc.example/uuid", "--ping=https://x/y"]
    assert without_ping(argv) == ["runner", "run", "m.yaml", "--ping", "***", "--ping=***"]
