"""`runner report` and `runner run --report` over real sandbox batches (127.0.0.1): what
the page says, that it needs no network, that no key reaches it, and that it works while
the batch runs."""

from __future__ import annotations

import html
import io
import json
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from runner.batch.run import run_batch
from runner.cli import main
from runner.commands.run import report_after_run
from runner.report.page import REPORT
from runner.sandbox.server import RunningSandbox
from tests.conftest import MakeSandbox
from tests.e2e.helpers import manifest, pulse_jobs, sandbox_books, spidra_jobs

pytestmark = pytest.mark.e2e

CANARY = "spd-CANARY-9a7e31c0d2"
ENV = {"SPIDRA_API_KEY": "spd_test", "PULSE_API_KEY": "pulse_test"}
# Spidra really allows 4 requests/s but the manifest declares 8: its quota headers pause
# the provider (and any 429 would too).
STRICT = {
    "time_scale": 1.0,
    "defaults": {"duration": {"min": 0.05, "max": 0.3}},
    "providers": {
        "spidra": {"rate_limit": {"requests": 4, "per": "1s"}},
        "pulse": {"fail_rate": 0.5},
    },
}
DECLARED = {
    "spidra": {
        "api_key": "${SPIDRA_API_KEY}",
        "limits": {"requests": {"rate": 8, "per": "1s"}, "in_flight": 3},
    },
    "pulse": {"api_key": "${PULSE_API_KEY}", "limits": {"requests": {"rate": 20, "per": "1s"}}},
}


def _cli(args: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> int:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return main(args)


def _batch(out: Path) -> Path:
    (found,) = [p for p in out.glob("*/*") if p.name != "latest"]
    return found


def _summary_row(page: str, provider: str) -> list[str]:
    table = page.split('<table id="summary">', 1)[1].split("</table>", 1)[0]
    header = re.findall(r"<th[^>]*>([^<]*)</th>", table.split("</tr>", 1)[0])
    row = next(r for r in table.split("<tr>") if r.startswith(f'<td class="l">{provider}</td>'))
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row)]
    return [f"{h}={c}" for h, c in zip(header, cells, strict=True)]


@pytest.mark.sandbox(seed=5, scenario=STRICT)
def test_run_report_draws_jobs_failures_load_and_pauses(
    tmp_path: Path, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = manifest(tmp_path, [spidra_jobs(12), pulse_jobs(8)], providers=DECLARED)
    out = tmp_path / "results"
    args = ["run", str(path), "--out", str(out), "--sandbox", sandbox.origin, "--report"]
    code = _cli(args, monkeypatch, ENV)
    batch = _batch(out)
    page = (batch / REPORT).read_text("utf-8")  # beside batch.json, after a failure (exit 1)
    assert code == 1
    states = {p.name: json.loads((p / "job.json").read_text()) for p in (batch / "jobs").iterdir()}
    failed = {job_id: doc for job_id, doc in states.items() if doc["state"] != "succeeded"}
    assert failed
    assert all(job_id.startswith("p-") for job_id in failed)
    for job_id in states:  # every job has its row (20 jobs: rows, not aggregated)
        assert f'class="lab">{job_id}</text>' in page
    for job_id, doc in failed.items():  # listed with its reason and a link to its job.json
        assert f'<a href="jobs/{job_id}/job.json">{job_id}</a>' in page
        why = doc["error"] or doc["reason"]  # the provider's words
        assert f'<td class="err">{html.escape(why)}</td>' in page
    links = re.findall(r'href="([^"]*)"', page)
    assert sorted(links) == sorted(f"jobs/{job_id}/job.json" for job_id in failed)

    books = sandbox_books(sandbox)
    spidra = _summary_row(page, "spidra")
    assert f"requests={sum(books['spidra']['requests'].values())}" in spidra
    assert f"429s={books['spidra']['throttled']}" in spidra
    assert "limit=8 / 1s" in spidra
    assert "in-flight cap=3" in spidra
    estimate = next(cell for cell in spidra if cell.startswith("estimate="))
    assert re.fullmatch(r"estimate=\S+ \((rate|submissions|in_flight)\)", estimate), estimate
    pulse = _summary_row(page, "pulse")
    assert f"failed={len(failed)}" in pulse
    assert "jobs=8" in pulse

    log = [json.loads(line) for line in (batch / "log.jsonl").read_text().splitlines()]
    paused = [e for e in log if e["event"] == "provider.paused"]
    assert paused  # each 429 pause is shaded on spidra's charts with its cause
    # on the timeline and on both load plots
    assert page.count('class="pause throttle"') == 3 * len(paused)
    assert "quota used up (rate-limit headers: remaining 0)" in {e["reason"] for e in paused}
    assert html.escape(paused[0]["reason"]) in page
    assert page.count("<svg ") == 2 * 2  # a timeline and a load chart per provider
    polls = sum(1 for e in log if e["event"] == "job.polled")
    assert sum(d.count("M") for d in re.findall(r'<path d="([^"]*)" class="poll"/>', page)) == polls
    # Nothing to fetch at view time: no script, no stylesheet link, no image, no url().
    for needle in ("<script", "<link", "src=", "url(", "@import", "<iframe", "<img"):
        assert needle not in page


@pytest.mark.sandbox(seed=2, scenario={"defaults": {"fail_rate": 1.0}})
def test_a_key_that_reached_the_journal_or_log_is_redacted_in_the_report(
    tmp_path: Path, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = manifest(tmp_path, [spidra_jobs(2)], providers={"spidra": DECLARED["spidra"]})
    out = tmp_path / "results"
    env = {"SPIDRA_API_KEY": CANARY}
    assert (
        _cli(["run", str(path), "--out", str(out), "--sandbox", sandbox.origin], monkeypatch, env)
        == 1
    )
    batch = _batch(out)
    # As if an older runner (or a provider echo the log missed) had written the key down.
    with sqlite3.connect(batch / "journal.sqlite") as db:
        db.execute("UPDATE jobs SET error = ?, raw_status = ?", (f"denied for {CANARY}", CANARY))
    with (batch / "log.jsonl").open("a") as log:
        entry = {
            "event": "provider.paused",
            "provider": "spidra",
            "reason": f"key {CANARY}",
            "seconds": 1.0,
            "timestamp": "2026-12-02T00:00:00.000Z",
        }
        log.write(json.dumps(entry) + "\n")
    assert _cli(["report", str(out / "e2e" / "latest")], monkeypatch, env) == 0
    page = (batch / REPORT).read_text("utf-8")
    assert CANARY not in page
    assert "denied for ***" in page
    assert "key ***" in page


def test_report_while_the_batch_runs_reads_without_the_lock(
    tmp_path: Path, make_sandbox: MakeSandbox
) -> None:
    slow = make_sandbox(
        scenario={"time_scale": 1.0, "defaults": {"duration": {"min": 3.0, "max": 3.0}}}
    )
    path = manifest(tmp_path, [pulse_jobs(3)], providers={"pulse": DECLARED["pulse"]})
    out = tmp_path / "results"
    codes: list[int] = []
    stderr = io.StringIO()
    thread = threading.Thread(
        target=lambda: codes.append(
            run_batch(path, out=out, sandbox=slow.origin, env=ENV, stderr=stderr)
        )
    )
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while (
            "submitted to pulse" not in stderr.getvalue()
            or stderr.getvalue().count("submitted") < 3
        ):
            assert time.monotonic() < deadline, stderr.getvalue()
            time.sleep(0.05)
        live = tmp_path / "live.html"
        assert main(["report", str(out / "e2e"), "--out", str(live)]) == 0
    finally:
        thread.join(30)
    page = live.read_text("utf-8")
    assert codes == [0]
    assert '<b class="warn">not finished</b>' in _status(page)
    assert page.count('fill="#3b7dd8" class="job"') == 3  # three running bars
    assert "href" not in page  # nothing failed (yet): no links
    batch = _batch(out)
    assert main(["report", str(batch)]) == 0
    final = _status((batch / REPORT).read_text("utf-8"))
    assert "not finished" not in final
    assert "exit code 0" in final


def _status(page: str) -> str:
    return page.split('<p class="sub" id="status">', 1)[1].split("</p>", 1)[0]


def test_report_of_a_directory_that_is_not_a_batch_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"runner: {tmp_path} is not a batch directory (no manifest.yaml); give "
        "results/<name>/<batch-id>, results/<name>/latest or results/<name>\n"
    )


def test_a_report_that_cannot_be_written_is_one_line_and_leaves_the_run_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    batch = tmp_path / "b"
    batch.mkdir()  # no journal: nothing to draw
    report_after_run(batch, [CANARY])
    err = capsys.readouterr().err
    assert err.startswith("runner: --report: no report written: ")
    assert "journal" in err
    assert err.count("\n") == 1
    assert not (batch / REPORT).exists()
