"""The plain-text part of an email, derived from its rendered HTML (stdlib ``html.parser``).

Tags are dropped, paragraphs and line breaks kept, links written as ``label (url)``, list items as
``- item``, entities unescaped; ``<script>``, ``<style>`` and ``<head>`` contribute nothing.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_SKIPPED = frozenset({"script", "style", "head", "title", "template", "noscript"})
# Elements that end a paragraph (blank line) or just a line.
_PARAGRAPHS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "dl", "table", "blockquote", "pre", "hr"}
)
_LINES = frozenset(
    {
        "div", "section", "article", "header", "footer", "main", "nav", "aside", "address",
        "figure", "figcaption", "form", "fieldset", "tr", "dt", "dd", "li", "center",
    }
)  # fmt: skip
_CELLS = frozenset({"td", "th"})
_WHITESPACE = re.compile(r"\s+")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0
        self._pre_depth = 0
        self._links: list[tuple[str | None, int]] = []

    # -- output helpers

    def _trailing_newlines(self) -> int:
        count = 0
        for part in reversed(self.parts):
            stripped = part.rstrip("\n")
            count += len(part) - len(stripped)
            if stripped:
                break
        return count

    def _at_line_start(self) -> bool:
        for part in reversed(self.parts):
            if part:
                return part.endswith("\n")
        return True

    def _break(self, newlines: int) -> None:
        # drop spaces before the break, then add the missing newlines (none at the very start)
        while self.parts and not self.parts[-1].strip(" "):
            if "\n" in self.parts[-1]:
                break
            self.parts.pop()
        if self.parts:
            self.parts[-1] = self.parts[-1].rstrip(" ")
        if not "".join(self.parts).strip():
            return
        missing = newlines - self._trailing_newlines()
        if missing > 0:
            self.parts.append("\n" * missing)

    def _write(self, text: str) -> None:
        if text:
            self.parts.append(text)

    # -- parser callbacks

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self._skip_depth += 1
            return
        if self._skip_depth:
            return
        if tag == "br":
            self.parts.append("\n")
        elif tag in _PARAGRAPHS:
            self._break(2)
        elif tag in _LINES:
            self._break(1)
        elif tag in _CELLS and not self._at_line_start():
            self._write(" ")
        if tag == "li":
            self._write("- ")
        elif tag == "pre":
            self._pre_depth += 1
        elif tag == "a":
            self._links.append((dict(attrs).get("href"), len(self.parts)))
        elif tag == "img":
            alt = (dict(attrs).get("alt") or "").strip()
            if alt:
                self._write(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self._skip_depth = max(0, self._skip_depth - 1)
            return
        if self._skip_depth:
            return
        if tag == "a" and self._links:
            self._close_link()
        elif tag == "pre":
            self._pre_depth = max(0, self._pre_depth - 1)
            self._break(2)
        elif tag in _PARAGRAPHS:
            self._break(2)
        elif tag in _LINES:
            self._break(1)

    def _close_link(self) -> None:
        href, start = self._links.pop()
        label = _WHITESPACE.sub(" ", "".join(self.parts[start:])).strip()
        target = _link_target(href, label)
        if target:
            self._write(f" ({target})" if label else target)

    def close(self) -> None:
        super().close()
        while self._links:  # links left open by sloppy HTML still show their target
            self._close_link()

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._pre_depth:
            self._write(data)
            return
        text = _WHITESPACE.sub(" ", data)
        if self._at_line_start() or (self.parts and self.parts[-1].endswith(" ")):
            text = text.lstrip(" ")
        self._write(text)


def _link_target(href: str | None, label: str) -> str | None:
    """What to print after a link's label, or None when it would add nothing."""
    href = (href or "").strip()
    if not href or href.startswith("#") or href.lower().startswith("javascript:"):
        return None
    shown = href[len("mailto:") :] if href.lower().startswith("mailto:") else href
    if shown == label or shown.rstrip("/") == label.rstrip("/"):
        return None
    return href


def html_to_text(html: str) -> str:
    """Plain text for the ``text/plain`` alternative of an HTML email."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    lines = [line.rstrip() for line in "".join(parser.parts).split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n").strip()
