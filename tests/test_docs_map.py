"""The README's file map matches the tree: every tracked file is in it, every file it names exists;
and every relative link of the README and docs/ reaches a file and, with an anchor, one of its headings.

The map is the README's "Files" section: one list item per file, `- `path`: what it holds`, or for
tests one item per group, `- `tests/test_x*.py`, `tests/test_y.py`: ...` (shell patterns allowed
only under tests/). Each folder that holds tracked files has a heading of its own in the section.
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# An item's names: backticked paths separated by ", ", then ": " and the description.
ITEM = re.compile(r"^- ((?:`[^`]+`)(?:, `[^`]+`)*): ")
NAME = re.compile(r"`([^`]+)`")
# A Markdown link's target; absolute URLs are left to the reader, relative ones are checked.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def tracked_files() -> list[str]:
    """The files git tracks, as the map must list them; skipped outside a git checkout (an image)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"not a git checkout, so no list of tracked files: {e}")
    files = [f for f in out.decode().split("\0") if f]
    # A new file counts once it is on disk: the map is written before the file is committed.
    return [f for f in files if (ROOT / f).is_file()]


def files_section(text: str) -> str:
    """The README's "## Files" section, up to the next second-level heading."""
    match = re.search(r"^## Files\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, 'README.md has no "## Files" section'
    return match.group(1)


def map_items(section: str) -> list[list[str]]:
    """The names of each list item of the section (an item continues on lines indented by two)."""
    items, current = [], None
    for line in section.splitlines():
        if line.startswith("- "):
            current = line
            items.append(current)
        elif current is not None and line.startswith("  "):
            items[-1] += " " + line.strip()
        else:
            current = None
    names = []
    for item in items:
        match = ITEM.match(item)
        assert match, f"a map item that does not start with `path`: ...: {item[:80]!r}"
        names.append(NAME.findall(match.group(1)))
    return names


def reading_order(section: str) -> list[str]:
    """The files of the reading order (the backticked paths joined by arrows)."""
    match = re.search(r"((?:`[^`]+`\s*→\s*)+`[^`]+`)", section)
    assert match, "the Files section has no reading order (`a` → `b` → ...)"
    return NAME.findall(match.group(1))


@pytest.fixture(scope="module")
def section() -> str:
    return files_section(README.read_text(encoding="utf-8"))


def test_the_parser_reads_items_patterns_and_continuations():
    section = (
        "Reading order: `a.py` → `b/c.py`\n\n### `b/`\n- `b/c.py`: one file,\n  described on two lines.\n"
        "- `tests/test_x*.py`, `tests/y.py`: a group.\n"
    )
    assert map_items(section) == [["b/c.py"], ["tests/test_x*.py", "tests/y.py"]]
    assert reading_order(section) == ["a.py", "b/c.py"]
    with pytest.raises(AssertionError, match="does not start with"):
        map_items("- a file without its name in backticks\n")


def test_every_tracked_file_is_in_the_map(section):
    names = [n for item in map_items(section) for n in item]
    missing = []
    for f in tracked_files():
        if f.startswith("tests/"):
            if not any(fnmatch.fnmatchcase(f, n) for n in names):
                missing.append(f)
        elif f not in names:
            missing.append(f)
    assert not missing, f"tracked files missing from README.md's Files section: {missing}"


def test_every_file_the_map_names_exists(section):
    files = set(tracked_files())
    unknown = []
    for name in [n for item in map_items(section) for n in item]:
        if any(c in name for c in "*?["):
            # Patterns group test files only; each must still match one.
            if not name.startswith("tests/") or not fnmatch.filter(files, name):
                unknown.append(name)
        elif name not in files:
            unknown.append(name)
    assert not unknown, f"README.md's Files section names files that are not in the tree: {unknown}"


def test_every_folder_has_a_heading(section):
    headings = set(re.findall(r"^### `([^`]+)/`", section, flags=re.M))
    folders = {str(PurePosixPath(f).parent) for f in tracked_files()} - {"."}
    missing = sorted(folders - headings)
    assert not missing, f"folders without a heading in README.md's Files section: {missing}"


def test_the_reading_order_names_the_harness_files(section):
    order = reading_order(section)
    assert order[0] == "benchmark/train.py"
    absent = [f for f in order if not (ROOT / f).is_file()]
    assert not absent, f"the reading order names files that do not exist: {absent}"


def heading_anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens,
    a repeated heading numbered -1, -2, ... Headings inside fenced code blocks are not headings."""
    anchors, seen, fenced = set(), {}, False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"^#{1,6} (.*)$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_heading_anchors_follow_githubs_rule():
    text = "# A `b` (c) d's\n```\n# not a heading\n```\n## Twice\n## Twice\n### x_y: z -- w\n"
    assert heading_anchors(text) == {"a-b-c-ds", "twice", "twice-1", "x_y-z----w"}


def test_every_relative_link_of_the_docs_reaches_its_target():
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest.read_text(encoding="utf-8")):
                broken.append(f"{where} (no such heading)")
    assert not broken, "links that reach nothing:\n" + "\n".join(broken)
