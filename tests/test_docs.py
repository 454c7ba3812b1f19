"""Documentation stays in step with the code and stands on its own.

Generated docs match the data they come from; every file cites specifications inside the
repository (``docs/spec/``) or public documents, never a folder outside the checkout.
"""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SPEC = DOCS / "spec"

# a digest citation: "docs/spec/lapic.md §6.3", "lapic.md §8 #19, #20", "mpwk.md §§1-6"
_CITATION = re.compile(r"(?:docs/spec/)?\b(lapic|mpwk|ghcb)\.md`*")
_SECTION = re.compile(r"§§?(\d+(?:\.\d+)?)(?:\s*[-–]\s*§?(\d+(?:\.\d+)?))?|#(\d+)")
_HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", re.MULTILINE)
_ROW = re.compile(r"^\| (\d+) \|", re.MULTILINE)


def _tracked_text_files():
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in names:
        try:
            yield name, (ROOT / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue        # binary files (pictures) and files deleted in the work tree


def _digest_index(name):
    """``(headings, rows)`` of ``docs/spec/<name>.md``: section numbers, and per top-level
    section the row numbers of its numbered tables."""
    text = (SPEC / f"{name}.md").read_text(encoding="utf-8")
    headings = set(_HEADING.findall(text))
    rows = {}
    parts = re.split(r"^## (\d+)\. ", text, flags=re.MULTILINE)
    for number, body in zip(parts[1::2], parts[2::2]):
        rows[number] = set(_ROW.findall(body))
    return headings, rows


def _citations(text):
    """Each digest citation in ``text`` as ``(digest, [(section, row or None), ...])``."""
    # join wrapped lines (docstrings, comments, Markdown) so a citation may span two
    flat = re.sub(r"\s*\n\s*(?:#+\s+|\*\s+|//\s*)?", " ", text)
    for match in _CITATION.finditer(flat):
        tail = re.split(r"[()\]\"]|[.:;] |\.md|$", flat[match.end():match.end() + 120], maxsplit=1)[0]
        refs, section = [], None
        for first, last, row in _SECTION.findall(tail):
            if row:
                refs.append((section, row))
                continue
            section = first
            refs.append((first, None))
            if last:
                if "." in first or "." in last:
                    refs.append((last, None))
                else:
                    refs.extend((str(n), None) for n in range(int(first) + 1, int(last) + 1))
        yield match.group(1), refs


def test_no_reference_outside_the_repository():
    outside = ("../" + "shared", "shared/" + "spec", "shared/" + "seeds")
    found = [f"{name}:{number}: {line.strip()}"
             for name, text in _tracked_text_files() if not name.startswith("sim/harness/third_party/")
             for number, line in enumerate(text.splitlines(), 1)
             if any(word in line for word in outside)]
    assert not found, ("these lines refer to files outside the repository; cite docs/spec/ or "
                       "the public specification instead:\n" + "\n".join(found))


@pytest.mark.parametrize("name", ["lapic", "mpwk", "ghcb"])
def test_digest_cites_public_sources(name):
    text = (SPEC / f"{name}.md").read_text(encoding="utf-8")
    sections = re.split(r"^## \d+\. ", text, flags=re.MULTILINE)[1:]
    missing = [section.splitlines()[0] for section in sections if "Public sources:" not in section]
    assert not missing, f"docs/spec/{name}.md: sections without 'Public sources:': {missing}"


def test_digest_citations_resolve():
    indexes = {name: _digest_index(name) for name in ("lapic", "mpwk", "ghcb")}
    broken, count = [], 0
    for path, text in _tracked_text_files():
        if path.startswith("sim/harness/third_party/"):
            continue
        for name, refs in _citations(text):
            headings, rows = indexes[name]
            for section, row in refs:
                count += 1
                if row is None and section not in headings:
                    broken.append(f"{path}: {name}.md §{section} is not a heading of docs/spec/{name}.md")
                elif row is not None and (section is None or row not in rows.get(section.split(".")[0], ())):
                    broken.append(f"{path}: {name}.md §{section} #{row} is not a row of that section's table")
    assert count > 50, f"only {count} digest citations found: is the pattern still right?"
    assert not broken, "\n".join(broken)
