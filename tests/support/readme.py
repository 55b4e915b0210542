"""The README's runnable parts, read from README.md as a newcomer reads them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def section(title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def bash_blocks(title: str) -> list[str]:
    """The fenced ```bash blocks of a section, in order, without their fences."""
    return [block.rstrip("\n") for block in re.findall(r"```bash\n(.*?)```", section(title), re.S)]
