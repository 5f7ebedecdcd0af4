"""The report's charts: rows or aggregated bands, counts per state over time, rates from
the load samples. Pure functions over made-up jobs (no batch needed)."""

from __future__ import annotations

import html

from runner.lifecycle import State
from runner.report import svg
from runner.report.data import JobLine, Pause, Sample

SCALE = svg.Scale(1000.0, 1100.0)


def clean(text: str) -> str:
    return html.escape(text)


def job(
    n: int, state: State, submitted: float | None, fetching: float | None, ended: float | None
) -> JobLine:
    return JobLine(f"j-{n}", "pulse", "extract", state, submitted, fetching, ended, polls=[1050.0])


def test_band_counts_follow_each_job_through_its_states() -> None:
    jobs = [
        job(1, State.SUCCEEDED, 1010.0, 1020.0, 1030.0),
        job(2, State.FAILED, 1010.0, None, 1040.0),
        job(3, State.RUNNING, 1050.0, None, None),
        job(4, State.SKIPPED, None, None, 1060.0),
    ]
    counts = svg.band_counts(jobs, [1000.0, 1015.0, 1025.0, 1035.0, 1055.0, 1065.0])
    assert counts == {
        "waiting": [4, 2, 2, 2, 1, 0],
        "remote": [0, 2, 1, 1, 1, 1],
        "fetching": [0, 0, 1, 0, 0, 0],
        "succeeded": [0, 0, 0, 1, 1, 1],
        "unsuccessful": [0, 0, 0, 0, 1, 2],
    }


def test_many_jobs_are_drawn_as_bands_not_rows_and_the_chart_stays_small() -> None:
    few = [
        job(n, State.SUCCEEDED, 1000.0 + n / 10, None, 1050.0 + n / 10) for n in range(svg.MAX_ROWS)
    ]
    rows = svg.timeline("pulse", few, SCALE, [], clean)
    assert rows.count('class="job"') == svg.MAX_ROWS
    assert 'class="band' not in rows

    many = [
        job(
            n,
            State.SUCCEEDED if n % 10 else State.FAILED,
            1000.0 + n / 1000,
            None,
            1050.0 + n / 1000,
        )
        for n in range(20_000)
    ]
    bands = svg.timeline(
        "pulse", many, SCALE, [Pause("pulse", "throttle", 1020.0, 1025.0, "429 <x>")], clean
    )
    assert 'class="job"' not in bands
    for name in ("succeeded", "unsuccessful", "waiting"):
        assert f'class="band {name}"' in bands
    assert "20000 jobs" in bands
    assert "429 &lt;x&gt;" in bands
    assert len(bands) < 40_000  # independent of the job count


def test_rates_average_the_sent_totals_over_the_window_and_survive_a_restart() -> None:
    # 2 requests/s for 50 s, then a resumed run counting from 0 at 5 requests/s.
    samples = [Sample(1000.0 + t, 2 * t, 0, 1, None, None) for t in range(1, 51)]
    samples += [Sample(1050.0 + t, 5 * t, 0, 1, None, None) for t in range(1, 51)]
    values = svg.rates(samples, SCALE, window=10.0)
    assert round(values[100], 6) == 2.0  # bin 100 ends at 33.3 s
    assert round(values[290], 6) == 5.0
    assert svg.window_for(300 / 900) == 15.0
    assert svg.window_for(20.0) == 1.0


def test_tick_labels_read_as_elapsed_time() -> None:
    assert [svg.elapsed(s) for s in (0, 45, 90, 600, 3900, 90000)] == [
        "0s",
        "45s",
        "1m30s",
        "10m",
        "1h05m",
        "25h00m",
    ]


def test_samples_that_come_early_or_late_draw_no_spikes() -> None:
    # 3 requests/s, sampled every 0.9 or 1.1 s: each sample's requests cover its own interval.
    samples, moment, sent = [], 1000.0, 0.0
    for k in range(80):
        step = 0.9 if k % 2 else 1.1
        moment += step
        sent += 3 * step
        samples.append(Sample(moment, round(sent * 10), 0, 1, None, None))  # x10: integers
    values = svg.rates(samples, SCALE, window=1.0)
    middle = values[30:200]
    assert max(middle) < 31.0
    assert min(middle) > 29.0
