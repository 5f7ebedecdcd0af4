"""The repository cites nothing outside itself, and every pointer into docs/ resolves.

Code, tests, schemas, manifests and docs may name a repository document (`README.md#...`,
`docs/<file>.md#<section>`), never a document that is not in the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runner.providers.registry import BUILT_IN

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("runner", "tests", "docs", "schemas", "manifests", "README.md")
SUFFIXES = {".py", ".md", ".json", ".yaml", ".yml", ".txt", ".toml"}
PROVIDERS = tuple(adapter.info.name for adapter in BUILT_IN)  # each has docs/providers/<name>.md
# Names of documents kept outside the repository, and the section sign they were cited with.
FORBIDDEN = re.compile(
    r"\.\./shared|(?<![\w-])reference/|performance\.md|provider-docs|wire-contracts|design\.md"
    r"|§|\\u00a7|\bseed\s+00\d\b"
)
LINK = re.compile(r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)\)")
POINTER = re.compile(r"(?<![\w/.-])((?:docs/[\w./<>-]+|README)\.md)(?:#([\w-]+))?")


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts
            )
    this = Path(__file__).resolve()
    return [f for f in files if f.resolve() != this]


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[`*_~]|\[|\]\([^)]*\)", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        elif not fence and (match := re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)):
            found.add(slug(match.group(1)))
    return found


def test_the_scan_sees_the_repository() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in scanned_files()}
    assert "README.md" in names
    assert "docs/engineering.md" in names
    assert {f"docs/providers/{name}.md" for name in PROVIDERS} <= names


def test_nothing_cites_a_document_outside_the_repository() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in scanned_files()
        for number, line in enumerate(
            path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1
        )
        if FORBIDDEN.search(line)
    ]
    assert offenders == []


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
            continue  # an absolute URL: public, not checked offline
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no such section")
    assert broken == []


def test_pointers_into_the_docs_resolve() -> None:
    """`docs/engineering.md#poll-jitter` in a comment names a file and a section that exist
    (`<name>` stands for every provider)."""
    broken = []
    for path in scanned_files():
        if path.suffix == ".md":
            continue  # Markdown files use links, checked above
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            for doc, anchor in POINTER.findall(line):
                names = PROVIDERS if "<name>" in doc else ("",)
                for name in names:
                    dest = ROOT / doc.replace("<name>", name)
                    where = f"{path.relative_to(ROOT)}:{number}: {doc}#{anchor}"
                    if not dest.is_file():
                        broken.append(f"{where}: no such file")
                    elif anchor and anchor not in anchors(dest):
                        broken.append(f"{where}: no such section")
    assert broken == []


def test_every_provider_page_has_the_common_sections() -> None:
    common = {
        "base-url-and-auth",
        "endpoints",
        "limits",
        "statuses",
        "cancel",
        "pagination",
        "results-and-downloads",
        "errors",
        "ids",
        "listing-and-reconcile",
        "quirks",
        "sources",
    }
    missing = {
        name: sorted(common - anchors(ROOT / "docs" / "providers" / f"{name}.md"))
        for name in PROVIDERS
    }
    assert missing == {name: [] for name in PROVIDERS}
