"""The repository stands alone: what a comment cites is in the repository.

- No tracked file outside `docs/` points at documents kept beside the repository (the two
  spellings in `OUTSIDE`), nor at the project's internal tracker or original brief by number
  ("issue 7", "seed section 3"): a comment states the rule it relies on, or cites `docs/`.
- Every `docs/<name>.md` a tracked file names exists, and every section it cites there
  (`docs/verifier.md §3`, `docs/kraken.md §1.2, §8`) is a numbered heading of that document.
- Links between the documents (`[verifier.md §3](verifier.md)`) name files and sections that
  exist.
- A bare section number (`§5` with no document before it) is allowed only in a file that says
  once which document its bare numbers point into, as `docs/<name>.md` followed by `(§n below)`;
  those numbers are checked against that document too. `RFC 9110 §10.2.3`-style citations of
  published standards are not the repository's to check, and `§n` is the placeholder of the
  convention itself, not a citation.

This file spells out the patterns it looks for, so it is the one tracked file it does not read.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()
# Spelled in two pieces so that this file does not match itself.
OUTSIDE = ("../" + "shared", "shared" + "/docs")
INTERNAL = re.compile(r"\bseed section\b|\bissue \d+\b|\bissue's\b", re.IGNORECASE)

DOC_PATH = re.compile(r"(?<![\w/.-])docs/([\w-]+\.md)")
# One section number, e.g. 4, 1.2, 3.6: what follows a `§`.
SECTION = r"\d+(?:\.\d+)*"
# The sections cited right after a document: `§4`, `§1.2, §8`, `§1.1–§1.8`, `§2 and §3`.
CITED_AFTER_PATH = re.compile(rf"\A(?:[\s,;/`]|–|-|and|or)*§({SECTION})")
DECLARATION = re.compile(r"(?<![\w/.-])docs/([\w-]+\.md)`?\s+\(§n below\)")
STANDARD = re.compile(rf"\b(?:RFC|NEP|EIP|ISO) ?\d+ §{SECTION}")
DOC_LINK = re.compile(rf"\[([\w-]+\.md)(?: §({SECTION}))?\]\(([\w-]+\.md)\)")
HEADING = re.compile(rf"^#{{1,6}}\s+§?({SECTION})\.?\s", re.MULTILINE)


@cache
def tracked() -> tuple[str, ...]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: nothing says which files are tracked")
    return tuple(p for p in out.decode().split("\0") if p)


def text_of(path: str) -> str | None:
    try:
        return (ROOT / path).read_text(encoding="utf-8")
    except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
        return None  # binary, or deleted in the working tree but not yet from the index


def outside_docs() -> list[tuple[str, str]]:
    found = []
    for path in tracked():
        if path.startswith("docs/") or path == SELF:
            continue
        text = text_of(path)
        if text is not None:
            found.append((path, text))
    return found


@cache
def sections_of(doc: str) -> frozenset[str]:
    return frozenset(HEADING.findall((ROOT / "docs" / doc).read_text(encoding="utf-8")))


def line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def cited_sections(text: str, start: int) -> list[tuple[str, int]]:
    """The section numbers chained right after a document path ending at `start`."""
    cited, pos = [], start
    while match := CITED_AFTER_PATH.match(text[pos:]):
        cited.append((match.group(1), pos + match.start(1)))
        pos += match.end()
    return cited


def test_no_file_points_outside_the_repository() -> None:
    problems = []
    for path, text in outside_docs():
        for number, line in enumerate(text.splitlines(), 1):
            if any(marker in line for marker in OUTSIDE):
                problems.append(f"{path}:{number}: {line.strip()}")
            elif INTERNAL.search(line):
                problems.append(f"{path}:{number}: cites the tracker or the brief: {line.strip()}")
    assert not problems, "cited from outside the repository:\n" + "\n".join(problems)


def test_every_cited_doc_and_section_exists() -> None:
    problems = []
    for path, text in outside_docs():
        for match in DOC_PATH.finditer(text):
            doc = match.group(1)
            where = f"{path}:{line_of(text, match.start())}"
            if not (ROOT / "docs" / doc).is_file():
                problems.append(f"{where}: docs/{doc} does not exist")
                continue
            for section, _ in cited_sections(text, match.end()):
                if section not in sections_of(doc):
                    problems.append(f"{where}: docs/{doc} has no section §{section}")
    assert not problems, "\n".join(problems)


def test_links_between_docs_resolve() -> None:
    problems = []
    for path in tracked():
        if not (path.startswith("docs/") and path.endswith(".md")):
            continue
        text = text_of(path) or ""
        for match in DOC_LINK.finditer(text):
            shown, section, target = match.groups()
            where = f"{path}:{line_of(text, match.start())}"
            if shown != target or not (ROOT / "docs" / target).is_file():
                problems.append(f"{where}: link to {target} (shown as {shown}) does not resolve")
            elif section is not None and section not in sections_of(target):
                problems.append(f"{where}: {target} has no section §{section}")
    assert not problems, "\n".join(problems)


def test_bare_section_numbers_name_their_document() -> None:
    problems = []
    for path, text in outside_docs():
        if "§" not in text:
            continue
        explained = set()  # offsets of `§` already accounted for
        for match in DOC_PATH.finditer(text):
            explained.update(index - 1 for _, index in cited_sections(text, match.end()))
        for match in STANDARD.finditer(text):
            explained.add(text.index("§", match.start()))
        declared = DECLARATION.search(text)
        if declared:
            explained.add(text.index("§", declared.start()))
        for match in re.finditer(rf"§(?!n\b)({SECTION})?", text):
            if match.start() in explained:
                continue
            where = f"{path}:{line_of(text, match.start())}"
            if declared is None:
                problems.append(
                    f"{where}: `{match.group(0)}` names no document (cite docs/<name>.md, "
                    "or declare `docs/<name>.md (§n below)` once)"
                )
            elif match.group(1) is None:
                problems.append(f"{where}: a bare `§` with no number")
            elif not (ROOT / "docs" / declared.group(1)).is_file():
                problems.append(f"{where}: declared docs/{declared.group(1)} does not exist")
            elif match.group(1) not in sections_of(declared.group(1)):
                problems.append(f"{where}: docs/{declared.group(1)} has no section §{match.group(1)}")
    assert not problems, "\n".join(problems)
