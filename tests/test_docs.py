"""Every documentation reference in user-facing text points to a file in the clone.

A fresh clone has no `../shared/` and no design notes outside it; help texts, reports and
READMEs that cite `method.md §3` must find `docs/method.md` and its section 3 there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Files a user reads: the READMEs, docs/, the changelog, the example Makefile, and the
# package's source (its docstrings become --help, its strings go into reports).
SOURCES = sorted(
    [
        ROOT / "README.md",
        ROOT / "CHANGELOG.md",
        ROOT / "examples" / "README.md",
        ROOT / "examples" / "Makefile",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "mmesid_cli").rglob("*.py"),
    ]
)
MD_REF = re.compile(
    r"(?<![\w./-])((?:\.\./|\./)?[\w-]+(?:/[\w.-]+)*\.md)\b(?:\s*(?:§|section )(\d+))?"
)
# Markdown files that mmesid commands *write* (report.md, curve.md), not documents to find.
OUTPUTS = re.compile(r"(^|/)(report|curve[\w-]*|\$@)(\.partial)?\.md$")
FORBIDDEN = [
    (re.compile(r"\.\./shared|shared/data"), "a folder a user's clone does not have"),
    (re.compile(r"issue notes?"), "notes a user cannot read"),
    (re.compile(r"(?<![\w/])design\.md"), "a design note outside the clone"),
]


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _resolve(reference: str, source: Path) -> Path | None:
    for base in (source.parent, ROOT):
        candidate = (base / reference).resolve()
        if candidate.is_file():
            return candidate
    return None


def _sections(document: Path) -> set[str]:
    return set(re.findall(r"^#+ §(\d+)\b", document.read_text(encoding="utf-8"), flags=re.M))


def test_the_docs_exist() -> None:
    for name in ("method.md", "formats.md", "cli.md", "data.md"):
        assert (ROOT / "docs" / name).is_file(), name


@pytest.mark.parametrize("source", SOURCES, ids=_where)
def test_every_md_reference_exists(source: Path) -> None:
    text = source.read_text(encoding="utf-8")
    missing = []
    for match in MD_REF.finditer(text):
        reference, section = match.groups()
        if OUTPUTS.search(reference):
            continue
        document = _resolve(reference, source)
        line = text.count("\n", 0, match.start()) + 1
        if document is None:
            missing.append(f"{_where(source)}:{line}: {reference} is not in the clone")
        elif section and section not in _sections(document):
            missing.append(f"{_where(source)}:{line}: {reference} has no §{section}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("source", SOURCES, ids=_where)
def test_no_reference_outside_the_clone(source: Path) -> None:
    text = source.read_text(encoding="utf-8")
    found = [
        f"{_where(source)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)!r} ({why})"
        for pattern, why in FORBIDDEN
        for m in pattern.finditer(text)
    ]
    assert not found, "\n".join(found)


def test_the_checker_catches_a_missing_document(tmp_path: Path) -> None:
    # The patterns above must see a bare `method.md §3`, a path, and a section that is absent.
    text = "see method.md §3, docs/nothing.md and docs/method.md §99"
    refs = [m.groups() for m in MD_REF.finditer(text)]
    assert refs == [("method.md", "3"), ("docs/nothing.md", None), ("docs/method.md", "99")]
    source = ROOT / "mmesid_cli" / "x.py"
    assert _resolve("method.md", source) is None
    assert _resolve("docs/method.md", source) == ROOT / "docs" / "method.md"
    assert "99" not in _sections(ROOT / "docs" / "method.md")
