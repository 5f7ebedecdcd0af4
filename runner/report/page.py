"""The report page: one HTML file with inline CSS and inline SVG, no script and no URL but
the relative links to each failed job's job.json, every text redacted and escaped once
(`Page.clean`). `write_report` is what `runner report` and `runner run --report` call.
"""

from __future__ import annotations

import html
import os
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from runner.lifecycle import UNSUCCESSFUL, State
from runner.report import svg
from runner.report.data import BatchData, JobLine, Pause, Sample, read_batch
from runner.store.redaction import Redactor
from runner.store.results import JOBS, OUTCOME, write_atomic

REPORT = "report.html"
MAX_FAILED = 500  # failed jobs listed one by one; the rest are counted (reasons: all)
FALLBACK_NOTE = (
    "not in this batch's log (written by runs of runner that log provider.load, "
    "provider.limits and batch.estimate)"
)

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1160px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd}
h3{font-size:15px;margin:18px 0 4px}.sub{color:#666;margin:0 0 12px}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 8px;border-bottom:1px solid #eee;
text-align:right;white-space:nowrap}th{background:#f6f6f6}td.l,th.l{text-align:left}
td.lim{text-align:left;white-space:normal;max-width:230px}
td.err{text-align:left;white-space:normal;max-width:640px;font-family:ui-monospace,monospace;font-size:12px}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:12px;
height:10px;margin-right:4px;vertical-align:-1px}
svg{display:block;margin:4px 0 10px}svg text{font:11px system-ui,sans-serif;fill:#444}
svg .tick{text-anchor:middle;fill:#777}svg .lab{text-anchor:end}
svg .grid{stroke:#eee}svg .poll{stroke:#111;stroke-width:1;opacity:.55}
svg .pollbar{fill:#555}svg .rate{fill:none;stroke:#3b7dd8;stroke-width:1.5}
svg .inflight{fill:none;stroke:#2e9e44;stroke-width:1.5}
svg .limit{fill:none;stroke:#d1342f;stroke-width:1.2;stroke-dasharray:5 3}
.warn{color:#a15c00}.note{color:#666;font-size:12px}
"""


def _utc(moment: float | None) -> str:
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return svg.elapsed(value) if value >= 1 else f"{value:.2f}s"


class Page:
    """Builds the page of one batch; `clean` is the one way text gets in."""

    def __init__(self, data: BatchData, *, secrets: Sequence[str], out: Path) -> None:
        self.data = data
        self._redactor = Redactor(secrets)
        self._out = out
        self.scale = svg.Scale(data.started, max(data.last_time, data.started + 1.0))

    def clean(self, text: str) -> str:
        return html.escape(self._redactor.text(text), quote=True)

    def _job_link(self, job_id: str) -> str:
        target = self.data.path / JOBS / job_id / OUTCOME
        relative = os.path.relpath(target, self._out.parent)
        href = quote(Path(relative).as_posix(), safe="/._-~")
        return f'<a href="{self.clean(href)}">{self.clean(job_id)}</a>'

    # -- sections --------------------------------------------------------------------------

    def render(self) -> str:
        data = self.data
        title = f"runner report: {data.name} {data.batch_id}"
        body = [
            f"<h1>{self.clean(data.name)} <small>{self.clean(data.batch_id)}</small></h1>",
            f'<p class="sub" id="status">{self.status_line()}</p>',
            self.summary(),
            self.timelines(),
            self.loads(),
            self.failures(),
            self.notices(),
            f'<p class="note">Written by runner report at {_utc(data.generated)} from '
            f"{self.clean(str(data.path))}/journal.sqlite and log.jsonl.</p>",
        ]
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{self.clean(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body)
            + "</body></html>\n"
        )

    def status_line(self) -> str:
        data = self.data
        if data.ended is None:
            state = (
                f'<b class="warn">not finished</b> (running, or stopped before the end) as of '
                f"{_utc(data.generated)}"
            )
        else:
            state = f"finished {_utc(data.ended)}, exit code {data.exit_code}"
        makespan = data.last_time - data.started
        parts = [
            f"started {_utc(data.started)}",
            state,
            f"{len(data.jobs)} jobs on {len(data.providers)} providers",
            f"makespan {_seconds(makespan)}",
        ]
        if data.estimate is not None:
            parts.append(f"plan's estimate {_seconds(data.estimate.expected_seconds)}")
        return " · ".join(parts)

    def summary(self) -> str:
        data = self.data
        states = [s for s in State if any(j.state is s for j in data.jobs)]
        head = "".join(f"<th>{s.value}</th>" for s in states)
        rows = []
        totals: Counter[str] = Counter()
        for provider in data.providers:
            jobs = [j for j in data.jobs if j.provider == provider]
            counts = Counter(j.state for j in jobs)
            samples = data.samples.get(provider, [])
            sent = _total(samples, "sent")
            throttled = _total(samples, "throttled")
            pauses = [p for p in data.pauses if p.provider == provider]
            paused = sum(((p.end or data.last_time) - p.start) for p in pauses)
            starts = [j.submitted for j in jobs if j.submitted is not None]
            ends = [j.ended for j in jobs if j.ended is not None]
            makespan = max(ends) - min(starts) if starts and ends else None
            expected = None
            bound = ""
            if data.estimate is not None and provider in data.estimate.providers:
                planned = data.estimate.providers[provider]
                expected = float(planned.get("expected_seconds", 0.0))
                bound = f" ({self.clean(str(planned.get('bound', '')))})"
            limit = data.limits.get(provider)
            totals.update({"jobs": len(jobs), "sent": sent or 0, "throttled": throttled or 0})
            cells = "".join(f"<td>{counts.get(s, 0) or ''}</td>" for s in states)
            rows.append(
                f'<tr><td class="l">{self.clean(provider)}</td><td>{len(jobs)}</td>{cells}'
                f"<td>{_num(sent)}</td><td>{_num(throttled)}</td>"
                f"<td>{len(pauses)} / {_seconds(paused) if pauses else '0s'}</td>"
                f'<td class="lim">{self.clean(limit.text) if limit else "-"}</td>'
                f"<td>{limit.in_flight if limit and limit.in_flight else '-'}</td>"
                f"<td>{_seconds(makespan)}</td><td>{_seconds(expected)}{bound}</td></tr>"
            )
        all_counts = Counter(j.state for j in data.jobs)
        cells = "".join(f"<td><b>{all_counts.get(s, 0) or ''}</b></td>" for s in states)
        batch_expected = _seconds(data.estimate.expected_seconds) if data.estimate else "-"
        rows.append(
            f'<tr><td class="l"><b>batch</b></td><td><b>{totals["jobs"]}</b></td>{cells}'
            f"<td><b>{_num(totals['sent'])}</b></td><td><b>{_num(totals['throttled'])}</b></td>"
            "<td></td>"
            f"<td></td><td></td><td><b>{_seconds(data.last_time - data.started)}</b></td>"
            f"<td><b>{batch_expected}</b></td></tr>"
        )
        note = (
            ""
            if any(data.samples.values())
            else f'<p class="note">Requests and 429s: {FALLBACK_NOTE}.</p>'
        )
        return (
            '<h2>Summary</h2><table id="summary"><tr><th class="l">provider</th><th>jobs</th>'
            f'{head}<th>requests</th><th>429s</th><th>pauses</th><th class="l">limit</th>'
            "<th>in-flight cap</th><th>makespan</th><th>estimate</th></tr>"
            + "".join(rows)
            + f"</table>{note}"
        )

    def timelines(self) -> str:
        data = self.data
        legend = "".join(
            f'<span><i style="background:{fill}"></i>{name}</span>'
            for name, fill in (
                ("succeeded", svg.COLORS[State.SUCCEEDED]),
                ("downloading results", svg.FETCHING),
                ("failed", svg.COLORS[State.FAILED]),
                ("timed out", svg.COLORS[State.TIMED_OUT]),
                ("expired", svg.COLORS[State.EXPIRED]),
                ("submit unknown", svg.COLORS[State.SUBMIT_UNKNOWN]),
                ("cancelled", svg.COLORS[State.CANCELLED]),
                ("not finished", svg.RUNNING),
                ("429 pause", svg.PAUSE_FILL["throttle"]),
                ("outage", svg.PAUSE_FILL["outage"]),
            )
        )
        parts = [
            "<h2>Timeline</h2>",
            f'<p class="legend">{legend}<span>| poll</span></p>',
            f'<p class="note">From submit to the end of each job; time since the batch started. '
            f"A provider with more than {svg.MAX_ROWS} jobs is drawn as jobs per state over "
            "time (waiting, remote, downloading, succeeded, unsuccessful) with polls per "
            "bin below.</p>",
        ]
        for provider in data.providers:
            jobs = [j for j in data.jobs if j.provider == provider]
            jobs.sort(key=lambda j: (j.submitted is None, j.submitted or 0.0))
            pauses = [p for p in data.pauses if p.provider == provider]
            parts.append(
                f'<h3 id="timeline-{self.clean(provider)}">{self.clean(provider)} '
                f"<small>({len(jobs)} jobs)</small></h3>"
            )
            parts.append(svg.timeline(provider, jobs, self.scale, pauses, self.clean))
        return "\n".join(parts)

    def loads(self) -> str:
        data = self.data
        parts = [
            "<h2>Load per provider</h2>",
            '<p class="note">Top: requests per second (blue) against the declared limit '
            "(dashed red). Bottom: remote jobs in flight (green) against the cap (dashed red). "
            "Shaded: provider-wide pauses (429, red) and outages (grey); hover for the cause."
            "</p>",
        ]
        for provider in data.providers:
            samples = data.samples.get(provider, [])
            pauses = [p for p in data.pauses if p.provider == provider]
            limit = data.limits.get(provider)
            parts.append(f"<h3>{self.clean(provider)}</h3>")
            if not samples:
                parts.append(f'<p class="note">Requests and jobs in flight: {FALLBACK_NOTE}.</p>')
                continue
            parts.append(
                svg.load_chart(
                    provider,
                    samples,
                    limit.per_second if limit else None,
                    limit.in_flight if limit else None,
                    self.scale,
                    pauses,
                    self.clean,
                )
            )
            parts.append(self._pause_lines(pauses))
        return "\n".join(parts)

    def _pause_lines(self, pauses: Sequence[Pause]) -> str:
        """One line per kind and cause (a 429 storm is thousands of pauses, not lines)."""
        groups: dict[tuple[str, str], list[Pause]] = {}
        for pause in pauses:
            groups.setdefault((pause.kind, pause.cause), []).append(pause)
        lines = []
        for (kind, cause), found in sorted(groups.items(), key=lambda g: g[1][0].start)[:20]:
            what = "429 pause" if kind == "throttle" else "outage"
            length = sum((p.end or self.data.last_time) - p.start for p in found)
            first = svg.elapsed(found[0].start - self.data.started)
            times = f"{len(found)} × {what}s" if len(found) > 1 else what
            lines.append(
                f'<div class="note pause-line">{times} from +{first}, {length:.1f}s in all: '
                f"{self.clean(cause)}</div>"
            )
        return "".join(lines)

    def failures(self) -> str:
        failed = [j for j in self.data.jobs if j.state in UNSUCCESSFUL]
        if not failed:
            return '<h2>Jobs that did not succeed</h2><p id="failed">None.</p>'
        reasons = Counter(_reason(j) for j in failed)
        reason_rows = "".join(
            f'<tr><td>{n}</td><td class="err">{self.clean(text)}</td></tr>'
            for text, n in reasons.most_common(50)
        )
        rows = "".join(self._failed_row(job) for job in failed[:MAX_FAILED])
        more = ""
        if len(failed) > MAX_FAILED:
            more = (
                f'<p class="note">… and {len(failed) - MAX_FAILED} more: runner status '
                f"{self.clean(str(self.data.path))}</p>"
            )
        return (
            f"<h2>Jobs that did not succeed ({len(failed)})</h2>"
            f'<table id="reasons"><tr><th>jobs</th><th class="l">reason</th></tr>{reason_rows}'
            '</table><table id="failed"><tr><th class="l">job</th><th class="l">provider</th>'
            '<th class="l">state</th><th class="l">provider status</th>'
            '<th class="l">error</th></tr>'
            f"{rows}</table>{more}"
        )

    def _failed_row(self, job: JobLine) -> str:
        return (
            f'<tr><td class="l">{self._job_link(job.job_id)}</td>'
            f'<td class="l">{self.clean(job.provider)}</td><td class="l">{job.state.value}</td>'
            f'<td class="l">{self.clean(job.raw_status or "-")}</td>'
            f'<td class="err">{self.clean(_reason(job))}</td></tr>'
        )

    def notices(self) -> str:
        if not self.data.notices:
            return ""
        rows = "".join(
            f'<tr><td class="l">+{svg.elapsed(n.time - self.data.started)}</td>'
            f'<td class="l">{self.clean(n.provider)}</td><td class="l">{self.clean(n.event)}</td>'
            f'<td class="err">{self.clean(n.message)}</td></tr>'
            for n in self.data.notices[:200]
        )
        return f'<h2>Provider notices</h2><table id="notices">{rows}</table>'


def _reason(job: JobLine) -> str:
    return job.error or job.reason or job.raw_status or job.state.value


def _total(samples: Sequence[Sample], name: str) -> int | None:
    """A counter's total over the batch: its last value per run (it restarts at 0)."""
    if not samples:
        return None
    total = previous = 0
    for sample in samples:
        value = int(getattr(sample, name))
        if value < previous:
            total += previous
        previous = value
    return total + previous


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def render_report(
    batch: Path, *, secrets: Sequence[str] = (), out: Path | None = None, now: float | None = None
) -> str:
    out = out or batch / REPORT
    data = read_batch(batch, now=now)
    return Page(data, secrets=secrets, out=out).render()


def write_report(
    batch: Path, *, secrets: Sequence[str] = (), out: Path | None = None
) -> tuple[Path, float]:
    """Write the report of `batch` to `out` (default: report.html beside batch.json),
    atomically; returns where and how many seconds it took."""
    began = time.perf_counter()
    out = out or batch / REPORT
    text = render_report(batch, secrets=secrets, out=out)
    write_atomic(out, text.encode("utf-8"))
    return out, time.perf_counter() - began
