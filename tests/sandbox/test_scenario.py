"""Scenario files: layering of defaults, providers and job types; exact error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.errors import UsageError
from runner.sandbox.scenario import ErrorBurst, Knobs, RateLimit, Scenario, Span, load_scenario


def test_defaults_are_short_and_clean() -> None:
    knobs = Scenario().knobs("spidra", "scrape")
    assert knobs == Knobs()
    assert (knobs.duration, knobs.fail_rate, knobs.rate_limit) == (Span(0.2, 1.5), 0.0, None)


def test_layering_and_duration_strings(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "time_scale: 600\n"
        "defaults: {fail_rate: 0.1}\n"
        "providers:\n"
        "  spidra:\n"
        "    rate_limit: {requests: 300, per: 15m}\n"
        "    error_burst: {status: 503, count: 2, every: 10}\n"
        "    jobs:\n"
        "      crawl: {duration: {min: 5m, max: 10m}}\n"
    )
    scenario = load_scenario(path)
    assert scenario.time_scale == 600
    crawl = scenario.knobs("spidra", "crawl")
    assert crawl.duration == Span(300, 600)
    assert crawl.rate_limit == RateLimit(300, 900.0)
    assert crawl.error_burst == ErrorBurst(503, 2, 10)
    assert crawl.fail_rate == 0.1
    assert scenario.knobs("spidra", "scrape").duration == Span(0.2, 1.5)
    assert scenario.knobs("pulse").fail_rate == 0.1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"providers": {"spydra": {}}},
            "s: providers.spydra: unknown provider"
            " (expected one of: bulkgrid, lobstr, spidra, skop, pulse)",
        ),
        (
            {"providers": {"pulse": {"fail_rate": 2}}},
            "s: providers.pulse.fail_rate: must be between 0 and 1",
        ),
        (
            {"providers": {"pulse": {"jobs": {"extract": {"latency": 1}}}}},
            "s: providers.pulse.jobs.extract.latency: unknown key (expected one of: duration,"
            " expire_after, fail_rate, large_result_bytes, partial_rate, result_bytes, results)",
        ),
        (
            {"providers": {"pulse": {"duration": {"min": 2, "max": 1}}}},
            "s: providers.pulse.duration: min is greater than max",
        ),
        (
            {"providers": {"pulse": {"rate_limit": {"requests": 5}}}},
            "s: providers.pulse.rate_limit: needs both requests and per",
        ),
        ({"time_scale": 0}, "s: time_scale: must be positive"),
        (
            {"defaults": {"latency": "soon"}},
            "s: defaults.latency: 'soon' is not a duration (use e.g. 500ms, 2s, 15m, 1h, 1d)",
        ),
        ({"speed": 1}, "s: speed: unknown key (expected one of: defaults, providers, time_scale)"),
    ],
)
def test_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError) as info:
        Scenario.from_dict(data, source="s")
    assert str(info.value) == message


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"^cannot read scenario .*missing.yaml: No such file"):
        load_scenario(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: [\n")
    with pytest.raises(UsageError, match=r"bad.yaml: invalid YAML: "):
        load_scenario(bad)
