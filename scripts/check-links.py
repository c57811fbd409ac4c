#!/usr/bin/env python3
"""Check the relative links of the project's Markdown pages.

Every relative link (``[text](path)``, ``[text](path#anchor)``, ``![alt](image)``) in
README.md, docs/*.md and the folders' README.md files must name a file or folder inside
the repository, and an anchor must name a heading of the page it points to (GitHub's
heading ids). Links with a scheme (``https:``, ``mailto:``) are not checked. Prints one
line per broken link and exits 1 if there is any, so it can run in a pre-commit hook or CI.

Usage::

    .venv/bin/python scripts/check-links.py [FILE.md ...]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = (
    "README.md",
    "docs/*.md",
    "bench/README.md",
    "data/README.md",
    "models/README.md",
    "notebooks/README.md",
)

LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text: str, keep_code: bool = False) -> list[tuple[int, str]]:
    """Lines outside fenced code blocks, with their numbers; inline code removed unless kept."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line if keep_code else re.sub(r"`[^`]*`", "", line)))
    return lines


def anchors(page: Path) -> set[str]:
    """GitHub's ids of a page's headings: lower case, punctuation dropped, spaces to '-'."""
    seen: dict[str, int] = {}
    ids = set()
    for _, line in prose_lines(page.read_text(), keep_code=True):
        match = HEADING.match(line)
        if not match:
            continue
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(1))
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def check(page: Path) -> tuple[int, list[str]]:
    """The number of relative links of a page, and a line for each broken one."""
    checked, problems = 0, []
    for number, line in prose_lines(page.read_text()):
        for target in LINK.findall(line):
            if SCHEME.match(target):
                continue
            checked += 1
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(ROOT)}:{number}: {target}"
            if not resolved.is_relative_to(ROOT):
                problems.append(f"{where}: points outside the repository")
            elif not resolved.exists():
                problems.append(f"{where}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{where}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    return checked, problems


def main(argv: list[str]) -> int:
    pages = [Path(a).resolve() for a in argv] or sorted(
        {page for pattern in PAGES for page in ROOT.glob(pattern)}
    )
    links, problems = 0, []
    for page in pages:
        checked, broken = check(page)
        links += checked
        problems += broken
    for problem in problems:
        print(problem)
    print(f"{len(pages)} pages, {links} relative links, {len(problems)} broken")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
