"""Reading HTML pages the services serve."""

from __future__ import annotations

from html.parser import HTMLParser


class _AssetCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


def asset_urls(html: str) -> list[str]:
    """Every URL a browser would fetch to render ``html`` (scripts, stylesheets, icons, images)."""
    collector = _AssetCollector()
    collector.feed(html)
    return collector.urls


def external_references(html: str) -> list[str]:
    """Absolute http(s) or protocol-relative URLs anywhere in ``html`` (CDNs, fonts, ...)."""
    return [url for url in asset_urls(html) if url.startswith(("http://", "https://", "//"))]
