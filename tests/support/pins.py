"""The version range pyproject.toml pins a dependency to, beside the version installed: for the
tests of libraries we use past their public API (each pins the range its internals hold for)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

Version = tuple[int, ...]


def _version(text: str) -> Version:
    return tuple(int(part) for part in text.split("."))


def pinned_range(package: str) -> tuple[Version, Version]:
    """(lower, upper) of the ``>=lower,<upper`` range pyproject.toml gives ``package``."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    [spec] = [d for d in dependencies if re.match(rf"{re.escape(package)}[\[<>=~!; ]", d)]
    match = re.search(r">=([\d.]+),<([\d.]+)", spec)
    assert match, f"{package} must be pinned to a range (>=x,<y), got {spec!r}"
    return _version(match.group(1)), _version(match.group(2))


def installed(package: str) -> Version:
    return _version(importlib.metadata.version(package))[:3]
