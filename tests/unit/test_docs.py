"""Docs cite only files that exist: every repository path named in the Markdown pages is there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *ROOT.glob("*/README.md")]
# what a fresh clone holds at the top (not .venv, .run and the like, which are made locally)
TOP_LEVEL = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")} | {".env.example", ".ci"}
# `code spans` and (links) that look like a path inside the repository
CITED = re.compile(r"`([A-Za-z0-9_.{},/-]+)`|\]\(([A-Za-z0-9_./-]+)(?:#[^)]*)?\)")


def _cited_paths(page: Path) -> set[str]:
    found = set()
    for code, link in CITED.findall(page.read_text()):
        candidate = (code or link).rstrip("/")
        if "://" in candidate or (
            candidate.startswith(("-", ".", "/")) and candidate != ".env.example"
        ):
            continue
        first = candidate.split("/", 1)[0]
        if ("/" in candidate and first in TOP_LEVEL) or candidate in TOP_LEVEL:
            found.add(candidate)
    return found


def _exists(path: str) -> bool:
    if "{" in path:  # libs/messaging/{outcomes,policy}.py
        head, rest = path.split("{", 1)
        names, tail = rest.split("}", 1)
        return all(_exists(f"{head}{name}{tail}") for name in names.split(","))
    if "*" in path:
        return any(ROOT.glob(path))
    return (ROOT / path).exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_cited_path_exists(page: Path) -> None:
    missing = sorted(p for p in _cited_paths(page) if not _exists(p))
    assert missing == []


def test_the_check_finds_citations() -> None:
    assert "libs/delivery/claims.py" in _cited_paths(ROOT / "README.md")
