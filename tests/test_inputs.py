"""A batch's inputs: the loader names the `each` files it read (with the sha256 of the bytes
it read), `copy_inputs` copies them inside the batch dir, and a continued batch reads the
checked copies through a resolver, never the originals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.batch import inputs
from runner.errors import EachError, InputError, ManifestError
from runner.manifest.each import EachFile
from runner.manifest.loader import parse_manifest

ENV = {"PULSE_API_KEY": "k"}
CSV = b"doc\nalpha\nbeta\n"


def manifest(*files: str) -> bytes:
    jobs = "".join(
        f"""  - id: j{i}-{{n}}
    provider: pulse
    type: extract
    each: {{file: {name}}}
    params: {{file_url: "https://f.example/{{doc}}.pdf"}}
"""
        for i, name in enumerate(files)
    )
    head = 'version: 1\nname: inp\nproviders:\n  pulse: {api_key: "${PULSE_API_KEY}"}\njobs:\n'
    return (head + jobs).encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- the loader --------------------------------------------------------------------------------


def test_the_loader_names_each_file_it_read_once_with_the_sha256_of_its_bytes(
    tmp_path: Path,
) -> None:
    write(tmp_path / "data/items.csv", CSV)
    write(tmp_path / "more.csv", b"doc\ngamma\n")
    data = manifest("data/items.csv", "more.csv", "data/items.csv")
    data = data.replace(b"j2-", b"k2-")  # the third job reuses the first file
    loaded = parse_manifest(data, source=tmp_path / "m.yaml", env=ENV)
    assert loaded.inputs == (
        EachFile("data/items.csv", tmp_path / "data/items.csv", sha(CSV)),
        EachFile("more.csv", tmp_path / "more.csv", sha(b"doc\ngamma\n")),
    )
    assert [job.id for job in loaded.plan.jobs] == ["j0-1", "j0-2", "j1-1", "k2-1", "k2-2"]


def test_an_each_list_is_no_input(tmp_path: Path) -> None:
    data = manifest("x.csv").replace(b"{file: x.csv}", b"[alpha]").replace(b"{doc}", b"{item}")
    assert parse_manifest(data, source=tmp_path / "m.yaml", env=ENV).inputs == ()


def test_a_resolver_reads_the_copies_not_the_files_beside_the_manifest(tmp_path: Path) -> None:
    copy = write(tmp_path / "batch/inputs/items.csv", CSV)
    write(tmp_path / "data/items.csv", b"doc\nforged\n")  # the original, since edited
    record = {"data/items.csv": {"copy": "inputs/items.csv", "sha256": sha(CSV)}}
    loaded = parse_manifest(
        manifest("data/items.csv"),
        source=tmp_path / "m.yaml",
        env=ENV,
        resolve=inputs.resolver(tmp_path / "batch", record),
    )
    assert [job.params["file_url"] for job in loaded.plan.jobs] == [
        "https://f.example/alpha.pdf",
        "https://f.example/beta.pdf",
    ]
    assert loaded.inputs == (EachFile("data/items.csv", copy, sha(CSV)),)


def test_problems_inside_a_copy_point_at_the_copy(tmp_path: Path) -> None:
    copy = write(tmp_path / "batch/inputs/items.csv", b"doc\nalpha,extra\n")
    record = {"items.csv": {"copy": "inputs/items.csv", "sha256": sha(copy.read_bytes())}}
    with pytest.raises(ManifestError) as info:
        parse_manifest(
            manifest("items.csv"),
            source=tmp_path / "batch/manifest.yaml",
            env=ENV,
            resolve=inputs.resolver(tmp_path / "batch", record),
        )
    assert (
        str(info.value)
        == f"{copy}:2:1: jobs[0] (id: j0-{{n}}).each: row has 2 columns; the header has 1"
    )


def test_a_file_the_batch_did_not_copy_is_a_located_problem(tmp_path: Path) -> None:
    write(tmp_path / "other.csv", CSV)  # exists beside the manifest: still never read
    with pytest.raises(ManifestError) as info:
        parse_manifest(
            manifest("other.csv"),
            source=tmp_path / "manifest.yaml",
            env=ENV,
            resolve=inputs.resolver(tmp_path, {}),
        )
    assert str(info.value) == (
        f"{tmp_path / 'manifest.yaml'}:9:18: jobs[0] (id: j0-{{n}}).each.file: "
        "'other.csv': not among the inputs this batch copied"
    )


# -- copying -----------------------------------------------------------------------------------


def each_file(path: Path, written: str) -> EachFile:
    return EachFile(written, path, sha(path.read_bytes()))


def test_copies_are_byte_for_byte_flat_inside_the_batch_and_numbered_on_collision(
    tmp_path: Path,
) -> None:
    batch = tmp_path / "results/inp/20261122T030000Z"
    batch.mkdir(parents=True)
    a = write(tmp_path / "a/items.csv", b"doc\r\nalpha\r\n\xef\xbb\xbf")
    b = write(tmp_path / "b/items.csv", CSV)
    up = write(tmp_path / "results/inp/secret.csv", b"doc\nx\n")
    files = [each_file(a, "a/items.csv"), each_file(b, "b/items.csv")]
    files.append(each_file(up, "results/inp/20261122T030000Z/../secret.csv"))
    files.append(each_file(up, "../.."))

    record = inputs.copy_inputs(batch, files)

    assert record == {
        "a/items.csv": {"copy": "inputs/items.csv", "sha256": sha(a.read_bytes())},
        "b/items.csv": {"copy": "inputs/items-2.csv", "sha256": sha(CSV)},
        "results/inp/20261122T030000Z/../secret.csv": {
            "copy": "inputs/secret.csv",
            "sha256": sha(b"doc\nx\n"),
        },
        "../..": {"copy": "inputs/file", "sha256": sha(b"doc\nx\n")},
    }
    assert sorted(p.name for p in (batch / "inputs").iterdir()) == [
        "file", "items-2.csv", "items.csv", "secret.csv",
    ]  # fmt: skip
    assert (batch / "inputs/items.csv").read_bytes() == a.read_bytes()
    assert (batch / "inputs/items-2.csv").read_bytes() == CSV


def test_a_file_changed_after_it_was_read_is_refused_and_leaves_no_temporary(
    tmp_path: Path,
) -> None:
    original = write(tmp_path / "items.csv", CSV)
    read = each_file(original, "items.csv")
    original.write_bytes(b"doc\nforged\n")
    with pytest.raises(InputError) as info:
        inputs.copy_inputs(tmp_path / "batch", [read])
    assert str(info.value) == (
        "each file 'items.csv' changed while the batch was starting; nothing was sent: run it again"
    )
    assert [p.name for p in (tmp_path / "batch/inputs").iterdir()] == ["items.csv"]


def test_a_file_gone_after_it_was_read_is_named(tmp_path: Path) -> None:
    read = EachFile("data/items.csv", tmp_path / "data/items.csv", sha(CSV))
    with pytest.raises(InputError) as info:
        inputs.copy_inputs(tmp_path / "batch", [read])
    assert str(info.value) == "cannot copy each file 'data/items.csv': No such file or directory"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=6, unique=True))
def test_copy_names_never_escape_and_never_collide(names: list[str]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = write(root / "src.txt", b"x\n")
        record = inputs.copy_inputs(root / "batch", [each_file(source, n) for n in names])
        copies = [entry["copy"] for entry in record.values()]
        assert len({c.casefold() for c in copies}) == len(names)
        for copy in copies:
            assert (root / "batch" / copy).resolve().parent == (root / "batch/inputs").resolve()
            assert (root / "batch" / copy).read_bytes() == b"x\n"
        assert inputs.parse(inputs.render(record)) == record


# -- continuing a batch ------------------------------------------------------------------------


def batch_with_copy(tmp_path: Path) -> tuple[Path, dict[str, dict[str, str]]]:
    batch = tmp_path / "batch"
    write(batch / "manifest.yaml", manifest("data/items.csv"))
    record = inputs.copy_inputs(
        batch, [each_file(write(tmp_path / "items.csv", CSV), "data/items.csv")]
    )
    return batch, record


def meta_of(batch: Path, record: dict[str, dict[str, str]]) -> dict[str, str]:
    return {
        "inputs": inputs.render(record),
        "manifest_sha256": sha((batch / "manifest.yaml").read_bytes()),
    }


def test_reopen_checks_the_manifest_and_copies_and_resolves_to_the_copies(
    tmp_path: Path,
) -> None:
    batch, record = batch_with_copy(tmp_path)
    found, resolve = inputs.reopen(batch, meta_of(batch, record), "manifest.yaml")
    assert found == record
    assert resolve("data/items.csv") == batch / "inputs/items.csv"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("delete", "its copy of input 'data/items.csv' (inputs/items.csv) is missing"),
        (
            "edit",
            "its copy of input 'data/items.csv' (inputs/items.csv) has changed since the "
            "batch started (sha256 differs)",
        ),
        ("manifest", "its manifest.yaml has changed since the batch started (sha256 differs)"),
    ],
)
def test_reopen_refuses_a_missing_or_changed_copy_naming_it(
    tmp_path: Path, change: str, message: str
) -> None:
    batch, record = batch_with_copy(tmp_path)
    meta = meta_of(batch, record)
    if change == "delete":
        (batch / "inputs/items.csv").unlink()
    elif change == "edit":
        (batch / "inputs/items.csv").write_bytes(b"doc\nforged\n")
    else:
        with (batch / "manifest.yaml").open("ab") as handle:
            handle.write(b"# edited\n")
    with pytest.raises(InputError) as info:
        inputs.reopen(batch, meta, "manifest.yaml")
    assert str(info.value) == message


def test_a_copy_changed_between_the_check_and_the_parse_is_refused(tmp_path: Path) -> None:
    batch, record = batch_with_copy(tmp_path)
    read = [EachFile("data/items.csv", batch / "inputs/items.csv", sha(b"other"))]
    with pytest.raises(InputError) as info:
        inputs.check_read(record, read)
    assert str(info.value) == (
        "its copy of input 'data/items.csv' (inputs/items.csv) has changed since the batch "
        "started (sha256 differs)"
    )
    inputs.check_read(record, [EachFile("data/items.csv", batch / "inputs/items.csv", sha(CSV))])


def test_a_batch_without_a_record_has_no_inputs(tmp_path: Path) -> None:
    batch, _ = batch_with_copy(tmp_path)
    record, resolve = inputs.reopen(batch, {}, "manifest.yaml")
    assert record == {}
    with pytest.raises(EachError) as info:
        resolve("data/items.csv")
    assert info.value.message == "not among the inputs this batch copied"


@pytest.mark.parametrize(
    "copy", ["../journal.sqlite", "inputs/../manifest.yaml", "jobs/x", "inputs/", "inputs/a/b"]
)
def test_a_record_pointing_outside_inputs_is_unreadable(copy: str) -> None:
    text = json.dumps({"items.csv": {"copy": copy, "sha256": "0" * 64}})
    with pytest.raises(InputError) as info:
        inputs.parse(text)
    assert str(info.value) == "the journal's record of its inputs is unreadable"


@pytest.mark.parametrize("text", ["", "[]", '{"a": 1}', '{"a": {"copy": "inputs/a"}}'])
def test_a_record_that_is_not_one_is_unreadable(text: str) -> None:
    with pytest.raises(InputError) as info:
        inputs.parse(text)
    assert str(info.value) == "the journal's record of its inputs is unreadable"
