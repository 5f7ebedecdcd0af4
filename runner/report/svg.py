"""The report's charts as inline SVG strings: a job timeline (one row per job, or stacked
counts per state once a provider has too many jobs for rows), requests per second against
the limit, and remote jobs in flight against the cap, with provider pauses shaded.

Every text that reaches the SVG passes through `clean` (redaction + escaping), given by the
page. Numbers are rounded to 0.1 px so a 100,000-job batch stays a small file.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from runner.lifecycle import State
from runner.report.data import JobLine, Pause, Sample

Clean = Callable[[str], str]

WIDTH = 1100  # the whole SVG
LEFT = 150  # room for labels
PLOT = WIDTH - LEFT - 20
ROW = 12  # px per job row, labelled (up to LABELLED jobs)
SMALL_ROW = 6  # px per job row beyond that, ids only on hover
LABELLED = 60
MAX_ROWS = 150  # above this many jobs a provider's timeline aggregates
BINS = 300  # time bins of an aggregated chart
SAMPLE_SECONDS = 1.0  # between two provider.load lines (runner.batch.load)

COLORS = {
    State.SUCCEEDED: "#2e9e44",
    State.FAILED: "#d1342f",
    State.TIMED_OUT: "#e07b00",
    State.EXPIRED: "#9c6ade",
    State.CANCELLED: "#7f7f7f",
    State.DETACHED: "#7f7f7f",
    State.SUBMIT_UNKNOWN: "#c9a400",
    State.SKIPPED: "#bdbdbd",
}
RUNNING = "#3b7dd8"  # not finished yet
WAITING = "#e6e6e6"
FETCHING = "#9fd3ad"
PAUSE_FILL = {"throttle": "#f4a3a3", "outage": "#b9b9b9"}


def color(state: State) -> str:
    return COLORS.get(state, RUNNING)


def _f(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True, slots=True)
class Scale:
    """Unix seconds → x pixels over [t0, t1]."""

    t0: float
    t1: float

    @property
    def span(self) -> float:
        return max(self.t1 - self.t0, 1e-6)

    def x(self, moment: float) -> float:
        return LEFT + (min(max(moment, self.t0), self.t1) - self.t0) / self.span * PLOT


def elapsed(seconds: float) -> str:
    """`45s`, `2m30s`, `1h05m`: a tick label, time since the batch started."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m"


_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)


def _tick_step(span: float, wanted: int = 8) -> float:
    for step in _STEPS:
        if span / step <= wanted:
            return step
    return 86400 * math.ceil(span / 86400 / wanted)


def axis(scale: Scale, top: float, height: float) -> str:
    """Vertical grid lines with elapsed-time labels under the plot."""
    step = _tick_step(scale.span)
    parts = []
    tick = 0.0
    while tick <= scale.span + 1e-9:
        x = _f(scale.x(scale.t0 + tick))
        parts.append(
            f'<line x1="{x}" x2="{x}" y1="{_f(top)}" y2="{_f(top + height)}" class="grid"/>'
            f'<text x="{x}" y="{_f(top + height + 12)}" class="tick">{elapsed(tick)}</text>'
        )
        tick += step
    return "".join(parts)


def _svg(height: float, body: str, label: str, clean: Clean) -> str:
    return (
        f'<svg width="{WIDTH}" height="{_f(height)}" '
        f'viewBox="0 0 {WIDTH} {_f(height)}" role="img" aria-label="{clean(label)}">'
        f"{body}</svg>"
    )


def _pauses(pauses: Iterable[Pause], scale: Scale, top: float, height: float, clean: Clean) -> str:
    parts = []
    for pause in pauses:
        end = pause.end if pause.end is not None else scale.t1
        x0, x1 = scale.x(pause.start), scale.x(end)
        what = "429 pause" if pause.kind == "throttle" else "outage"
        seconds = end - pause.start
        parts.append(
            f'<rect x="{_f(x0)}" y="{_f(top)}" width="{_f(max(x1 - x0, 1.0))}" '
            f'height="{_f(height)}" fill="{PAUSE_FILL[pause.kind]}" opacity="0.55" '
            f'class="pause {pause.kind}"><title>{what} {seconds:.1f}s: '
            f"{clean(pause.cause)}</title></rect>"
        )
    return "".join(parts)


# -- the timeline ----------------------------------------------------------------------------


def timeline(
    provider: str, jobs: Sequence[JobLine], scale: Scale, pauses: Sequence[Pause], clean: Clean
) -> str:
    """One row per job, or stacked counts per state when there are more than MAX_ROWS."""
    if len(jobs) > MAX_ROWS:
        return density(provider, jobs, scale, pauses, clean)
    top = 4.0
    labels = len(jobs) <= LABELLED
    row = ROW if labels else SMALL_ROW
    height = top + row * len(jobs) + 20
    parts = [_pauses(pauses, scale, top, row * len(jobs), clean)]
    parts.append(axis(scale, top, row * len(jobs)))
    for index, job in enumerate(jobs):
        y = top + index * row
        if labels:
            parts.append(
                f'<text x="{LEFT - 6}" y="{_f(y + row - 2)}" class="lab">{clean(job.job_id)}</text>'
            )
        parts.append(_job_bar(job, scale, y, row, clean))
    return _svg(height, "".join(parts), f"{provider} timeline: {len(jobs)} jobs", clean)


def _job_bar(job: JobLine, scale: Scale, y: float, row: float, clean: Clean) -> str:
    if job.submitted is None:  # never sent: a mark at its end, if it has one
        if job.ended is None:
            return ""
        x = scale.x(job.ended)
        return (
            f'<rect x="{_f(x - 1.5)}" y="{_f(y + 1)}" width="3" height="{_f(row - 2)}" '
            f'fill="{color(job.state)}" class="job"><title>{clean(job.job_id)}: '
            f"{job.state.value} (never submitted)</title></rect>"
        )
    end = job.ended if job.ended is not None else scale.t1
    x0, x1 = scale.x(job.submitted), scale.x(end)
    fill = color(job.state) if job.state.terminal else RUNNING
    tip = (
        f"{clean(job.job_id)}: {job.state.value}, {end - job.submitted:.1f}s, "
        f"{len(job.polls)} polls"
    )
    if job.error:
        tip += f": {clean(job.error)}"
    parts = [
        f'<rect x="{_f(x0)}" y="{_f(y + 1)}" width="{_f(max(x1 - x0, 1.5))}" '
        f'height="{_f(row - 2)}" fill="{fill}" class="job"><title>{tip}</title></rect>'
    ]
    if job.fetching is not None and job.ended is not None and job.state is State.SUCCEEDED:
        xf = scale.x(job.fetching)
        if x1 - xf >= 1:
            parts.append(
                f'<rect x="{_f(xf)}" y="{_f(y + 1)}" width="{_f(x1 - xf)}" height="{_f(row - 2)}" '
                f'fill="{FETCHING}"/>'
            )
    if job.polls:
        ticks = "".join(f"M{_f(scale.x(p))} {_f(y)}v{_f(row)}" for p in job.polls)
        parts.append(f'<path d="{ticks}" class="poll"/>')
    return "".join(parts)


_BANDS: tuple[tuple[str, str], ...] = (
    ("succeeded", COLORS[State.SUCCEEDED]),
    ("unsuccessful", COLORS[State.FAILED]),
    ("fetching", FETCHING),
    ("remote", RUNNING),
    ("waiting", WAITING),
)


def band_counts(jobs: Sequence[JobLine], moments: Sequence[float]) -> dict[str, list[int]]:
    """At each moment, how many jobs were waiting (not sent), remote (sent, not finished
    there), fetching, succeeded, or ended otherwise. O((jobs + moments) log jobs)."""
    sent = sorted(j.submitted for j in jobs if j.submitted is not None)
    fetch = sorted(j.fetching for j in jobs if j.fetching is not None)
    won = sorted(j.ended for j in jobs if j.ended is not None and j.state is State.SUCCEEDED)
    lost = sorted(j.ended for j in jobs if j.ended is not None and j.state is not State.SUCCEEDED)
    # A job that ended without a fetch left "remote" (or "waiting") at its end.
    lost_sent = sorted(
        j.ended
        for j in jobs
        if j.ended is not None
        and j.state is not State.SUCCEEDED
        and j.submitted is not None
        and j.fetching is None
    )
    lost_fetching = sorted(
        j.ended
        for j in jobs
        if j.ended is not None and j.state is not State.SUCCEEDED and j.fetching is not None
    )
    total = len(jobs)
    out: dict[str, list[int]] = {name: [] for name, _ in _BANDS}
    for moment in moments:
        n_sent = bisect.bisect_right(sent, moment)
        n_fetch = bisect.bisect_right(fetch, moment)
        n_won = bisect.bisect_right(won, moment)
        n_lost = bisect.bisect_right(lost, moment)
        n_lost_sent = bisect.bisect_right(lost_sent, moment)
        n_lost_fetching = bisect.bisect_right(lost_fetching, moment)
        fetching = n_fetch - n_won - n_lost_fetching
        remote = n_sent - n_fetch - n_lost_sent
        out["succeeded"].append(n_won)
        out["unsuccessful"].append(n_lost)
        out["fetching"].append(max(fetching, 0))
        out["remote"].append(max(remote, 0))
        out["waiting"].append(max(total - n_won - n_lost - max(fetching, 0) - max(remote, 0), 0))
    return out


def density(
    provider: str, jobs: Sequence[JobLine], scale: Scale, pauses: Sequence[Pause], clean: Clean
) -> str:
    """Jobs per state over time, stacked (bottom: succeeded), plus polls per second."""
    top, plot_h, polls_h = 4.0, 160.0, 40.0
    moments = [scale.t0 + scale.span * i / BINS for i in range(BINS + 1)]
    counts = band_counts(jobs, moments)
    total = max(len(jobs), 1)
    parts = [axis(scale, top, plot_h + polls_h + 8)]
    below = [0] * len(moments)
    for name, fill in _BANDS:
        upper = [b + c for b, c in zip(below, counts[name], strict=True)]
        if any(counts[name]):
            parts.append(_band(moments, below, upper, scale, top, plot_h, total, fill, name))
        below = upper
    parts.append(_pauses(pauses, scale, top, plot_h, clean))  # over the bands: they fill it
    parts.append(
        f'<text x="{LEFT - 6}" y="{_f(top + 10)}" class="lab">{len(jobs)} jobs</text>'
        f'<text x="{LEFT - 6}" y="{_f(top + plot_h)}" class="lab">0</text>'
    )
    parts.append(_poll_strip(jobs, scale, top + plot_h + 8, polls_h))
    height = top + plot_h + polls_h + 8 + 20
    return _svg(height, "".join(parts), f"{provider} jobs per state over time", clean)


def _band(
    moments: Sequence[float],
    lower: Sequence[int],
    upper: Sequence[int],
    scale: Scale,
    top: float,
    height: float,
    total: int,
    fill: str,
    name: str,
) -> str:
    def y(count: int) -> str:
        return _f(top + height - count / total * height)

    forward = [f"{_f(scale.x(t))} {y(c)}" for t, c in zip(moments, upper, strict=True)]
    back = [
        f"{_f(scale.x(t))} {y(c)}" for t, c in zip(reversed(moments), reversed(lower), strict=True)
    ]
    return (
        f'<path d="M{"L".join(forward)}L{"L".join(back)}Z" fill="{fill}" class="band {name}">'
        f"<title>{name}</title></path>"
    )


def _poll_strip(jobs: Sequence[JobLine], scale: Scale, top: float, height: float) -> str:
    """Polls per bin as a bar strip (each poll is one status request)."""
    counts = [0] * BINS
    for job in jobs:
        for moment in job.polls:
            index = int((moment - scale.t0) / scale.span * BINS)
            counts[min(max(index, 0), BINS - 1)] += 1
    peak = max(counts) or 1
    width = PLOT / BINS
    seconds = scale.span / BINS
    path = "".join(
        f"M{_f(LEFT + i * width)} {_f(top + height)}v-{_f(c / peak * height)}h{_f(width)}"
        f"v{_f(c / peak * height)}"
        for i, c in enumerate(counts)
        if c
    )
    return (
        f'<path d="{path}" class="pollbar"/>'
        f'<text x="{LEFT - 6}" y="{_f(top + 10)}" class="lab">polls: {peak / seconds:.3g}/s</text>'
    )


# -- load: requests per second, jobs in flight ----------------------------------------------


def window_for(limit: float | None) -> float:
    """Seconds each requests/s value averages over: at least the 1 s between samples, and
    long enough to hold 5 requests at the declared rate (300 per 15 minutes is one request
    every 3 s: a one-second window would show 1/s, then 0)."""
    return max(1.0, 5.0 / limit) if limit else 1.0


def rates(samples: Sequence[Sample], scale: Scale, window: float = 1.0) -> list[float]:
    """Requests per second in each of BINS bins, averaged over the `window` seconds before
    each bin's end. Each sample's requests (the growth of its `sent` total; a total that
    goes down is a new run counting from 0) are spread evenly over the time since the
    sample before it, so samples that come a little early or late draw no spikes."""
    sums = [0.0] * BINS
    seconds = scale.span / BINS
    previous: Sample | None = None
    for sample in samples:
        if previous is None or sample.sent < previous.sent:
            delta, since = sample.sent, sample.time - SAMPLE_SECONDS
        else:
            delta, since = sample.sent - previous.sent, previous.time
        previous = sample
        if delta:
            _spread(sums, delta, since, sample.time, scale, seconds)
    k = max(1, round(window / seconds))
    prefix = [0.0]
    for value in sums:
        prefix.append(prefix[-1] + value)
    return [(prefix[i + 1] - prefix[max(0, i + 1 - k)]) / (k * seconds) for i in range(BINS)]


def _spread(
    sums: list[float], amount: float, start: float, end: float, scale: Scale, seconds: float
) -> None:
    """Add `amount`, spread evenly over [start, end], to the bins that interval covers."""
    a = (start - scale.t0) / seconds
    b = (end - scale.t0) / seconds
    if b - a < 1e-9:
        sums[min(max(int(b), 0), BINS - 1)] += amount
        return
    first, last = max(int(a), 0), min(int(b), BINS - 1)
    for index in range(first, last + 1):
        overlap = min(b, index + 1) - max(a, index)
        if overlap > 0:
            sums[index] += amount * overlap / (b - a)


def gauge(
    samples: Sequence[Sample], scale: Scale, value: Callable[[Sample], int | None]
) -> list[float | None]:
    """A gauge per bin: the highest sampled value in it, else the last one before it (None
    before the first sample), so a long batch still draws BINS steps, not one per second."""
    bins: list[float | None] = [None] * BINS
    for sample in samples:
        found: float | None = value(sample)
        if found is None:
            continue
        index = min(max(int((sample.time - scale.t0) / scale.span * BINS), 0), BINS - 1)
        current = bins[index]
        bins[index] = found if current is None else max(current, found)
    last: float | None = None
    for index, seen in enumerate(bins):
        if seen is None:
            bins[index] = last
        else:
            last = seen
    return bins


def _steps(values: Sequence[float | None], y: Callable[[float], float]) -> str:
    """A step line over the bins; a None bin (nothing sampled yet) is a gap."""
    width = PLOT / BINS
    parts = []
    drawing = False
    for index, value in enumerate(values):
        if value is None:
            drawing = False
            continue
        x0, x1 = _f(LEFT + index * width), _f(LEFT + (index + 1) * width)
        parts.append(f"{'L' if drawing else 'M'}{x0} {_f(y(value))}H{x1}")
        drawing = True
    return "".join(parts)


def load_chart(
    provider: str,
    samples: Sequence[Sample],
    limit: float | None,
    cap: int | None,
    scale: Scale,
    pauses: Sequence[Pause],
    clean: Clean,
) -> str:
    """Two stacked plots: requests/s (limit dashed) and remote jobs in flight (cap dashed)."""
    top, plot_h, gap = 4.0, 90.0, 26.0
    window = window_for(limit)
    values = rates(samples, scale, window)
    highest = max([*values, limit or 0.0, 1e-9])
    peak_rate = highest * 1.1
    parts = [
        _pauses(pauses, scale, top, plot_h, clean),
        _pauses(pauses, scale, top + plot_h + gap, plot_h, clean),
        axis(scale, top, plot_h),
    ]

    def y_rate(value: float) -> float:
        return top + plot_h - value / peak_rate * plot_h

    steps = _steps(values, y_rate)
    parts.append(
        f'<path d="{steps}" class="rate"><title>requests per second, averaged over '
        f"{window:.3g}s</title></path>"
    )
    if limit:
        y = _f(y_rate(limit))
        parts.append(
            f'<line x1="{LEFT}" x2="{LEFT + PLOT}" y1="{y}" y2="{y}" class="limit">'
            f"<title>declared limit {limit:.3g}/s</title></line>"
        )
    parts.append(
        f'<text x="{LEFT - 6}" y="{_f(y_rate(highest) + 4)}" class="lab">{highest:.3g} req/s</text>'
        f'<text x="{LEFT - 6}" y="{_f(top + plot_h)}" class="lab">0</text>'
    )
    second = top + plot_h + gap
    parts.append(axis(scale, second, plot_h))
    caps = [s.cap for s in samples if s.cap is not None]
    most = max([s.in_flight for s in samples] + caps + [cap or 0, 1])
    peak = most * 1.1

    def y_jobs(value: float) -> float:
        return second + plot_h - value / peak * plot_h

    in_flight = gauge(samples, scale, lambda s: s.in_flight)
    parts.append(
        f'<path d="{_steps(in_flight, y_jobs)}" class="inflight"><title>jobs in flight '
        "(the most in each bin)</title></path>"
    )
    if caps:
        cap_line = gauge(samples, scale, lambda s: s.cap)
        parts.append(
            f'<path d="{_steps(cap_line, y_jobs)}" class="limit">'
            "<title>in-flight cap</title></path>"
        )
    parts.append(
        f'<text x="{LEFT - 6}" y="{_f(y_jobs(most) + 4)}" class="lab">{most} in flight</text>'
        f'<text x="{LEFT - 6}" y="{_f(second + plot_h)}" class="lab">0</text>'
    )
    height = second + plot_h + 20
    return _svg(height, "".join(parts), f"{provider} requests per second and jobs in flight", clean)
