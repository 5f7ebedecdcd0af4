"""Each invalid manifest in tests/data/manifests/invalid/ fails with exactly its .expected text."""

from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path

import pytest

from runner.cli import main
from runner.errors import ManifestError
from runner.manifest import each
from runner.manifest.loader import MAX_MANIFEST_BYTES, load_manifest

INVALID = Path(__file__).parent / "data" / "manifests" / "invalid"
CASES = sorted(p.name for p in INVALID.glob("*.yaml"))
EACH_URLS = (
    "version: 1\nname: big\nproviders: {pulse: {api_key: '${PULSE_API_KEY}'}}\n"
    "jobs:\n  - {id: 'd-{n}', provider: pulse, type: extract, each: {file: urls.txt},"
    " params: {file_url: '{item}'}}\n"
)
KEYS = ("SPIDRA_API_KEY", "PULSE_API_KEY", "SKOP_API_KEY", "LOBSTR_API_KEY", "BULKGRID_API_KEY")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in KEYS:
        monkeypatch.setenv(key, "test-key-value")
    monkeypatch.setenv("RUNNER_TEST_EMPTY_KEY", "")
    monkeypatch.delenv("RUNNER_TEST_UNSET_KEY", raising=False)


LIBRARY = "{library}"  # in an .expected file: the YAML library's own detail, whatever it says


def matches_expected(actual: str, expected: str) -> bool:
    """Exact, except that `{library}` stands for a third party's wording (never asserted)."""
    pattern = ".+".join(re.escape(part) for part in expected.split(LIBRARY))
    return re.fullmatch(pattern, actual) is not None


def test_expected_text_matching_is_exact_outside_the_library_part() -> None:
    assert matches_expected(
        "a.yaml:1:2: YAML syntax error: x y\n", "a.yaml:1:2: YAML syntax error: {library}\n"
    )
    assert not matches_expected(
        "a.yaml:1:3: YAML syntax error: x\n", "a.yaml:1:2: YAML syntax error: {library}\n"
    )
    assert not matches_expected("a.yaml:1:2: oops\n", "a.yaml:1:2: YAML syntax error: {library}\n")
    assert matches_expected("same\n", "same\n")


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    for name in CASES:
        assert (INVALID / name).with_suffix(".expected").is_file(), name


@pytest.mark.parametrize("name", CASES)
def test_invalid_manifest_reports_exactly(
    name: str, env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(INVALID)
    code = main(["validate", name])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert matches_expected(err, (INVALID / name).with_suffix(".expected").read_text("utf-8"))
    assert "test-key-value" not in err


@pytest.mark.parametrize("name", ["unknown-job-key.yaml", "each-bad-items.yaml"])
def test_json_output_lists_the_same_problems(
    name: str, env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(INVALID)
    code = main(["validate", "--json", name])
    out, _ = capsys.readouterr()
    assert code == 2
    problems = json.loads(out)
    lines = (INVALID / name).with_suffix(".expected").read_text().splitlines()[:-1]
    rendered = [
        f"{p['file']}:{p['line']}:{p['column']}: {p['path']}: {p['message']}" for p in problems
    ]
    assert rendered == lines
    assert set(problems[0]) == {"file", "line", "column", "path", "message"}


def test_several_files_each_get_a_summary(
    env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(INVALID)
    code = main(["validate", "empty.yaml", "wrong-version.yaml"])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.splitlines() == [
        "empty.yaml:1:1: the manifest is empty; it needs version, name and jobs",
        "empty.yaml: 1 problem",
        "wrong-version.yaml:1:10: version: 2 is not a supported version (expected 1)",
        "wrong-version.yaml: 1 problem",
    ]


def test_a_50_mb_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate(50 * 1024 * 1024)  # sparse: costs no disk
    tracemalloc.start()
    try:
        with pytest.raises(ManifestError) as caught:
            load_manifest(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024  # refused by its size, not read into memory
    assert [p.render() for p in caught.value.problems] == [
        f"{big}:1:1: the file is 52,428,800 bytes; a manifest may be at most "
        f"{MAX_MANIFEST_BYTES:,} bytes (put long job lists in an `each` file)"
    ]


def test_a_missing_manifest_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "nope.yaml")
    assert [p.message for p in caught.value.problems] == [
        "cannot read the manifest: No such file or directory"
    ]


def test_a_huge_each_file_stops_at_the_item_cap(
    tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(each, "MAX_ITEMS", 1000)
    (tmp_path / "m.yaml").write_text(EACH_URLS)
    (tmp_path / "urls.txt").write_text("https://x.example/a.pdf\n" * 5000)
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "m.yaml")
    assert [p.render() for p in caught.value.problems] == [
        f"{tmp_path / 'urls.txt'}:1001:1: jobs[0] (id: d-{{n}}).each: "
        "more than 1,000 items; split the batch"
    ]


def test_a_huge_each_file_is_refused_by_size(
    tmp_path: Path, env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(each, "MAX_FILE_BYTES", 1000)
    (tmp_path / "m.yaml").write_text(EACH_URLS)
    with (tmp_path / "urls.txt").open("wb") as handle:
        handle.truncate(10_000)
    with pytest.raises(ManifestError) as caught:
        load_manifest(tmp_path / "m.yaml")
    assert [p.message for p in caught.value.problems] == [
        "'urls.txt': 10,000 bytes is too big (at most 1,000)"
    ]
