"""Language tags (BCP-47-ish: ``en``, ``pt-BR``, ``zh-Hant-TW``) and the fallback order."""

from __future__ import annotations

import re
from collections.abc import Iterable

from libs.notification.message import LANGUAGE_PATTERN

_LANGUAGE = re.compile(LANGUAGE_PATTERN)


def normalize_language(tag: str) -> str:
    """Canonical case: ``PT-br`` -> ``pt-BR``, ``zh-hant-tw`` -> ``zh-Hant-TW``.

    Raises ``ValueError`` for something that is not a language tag.
    """
    tag = tag.strip().replace("_", "-")
    if not _LANGUAGE.fullmatch(tag) or len(tag) > 35:
        raise ValueError(f"{tag!r} is not a language tag like 'en' or 'pt-BR'")
    primary, *rest = tag.split("-")
    parts = [primary.lower()]
    for sub in rest:
        if len(sub) == 2 and sub.isalpha():
            parts.append(sub.upper())  # region
        elif len(sub) == 4 and sub.isalpha():
            parts.append(sub.title())  # script
        else:
            parts.append(sub.lower())
    return "-".join(parts)


def fallback_chain(requested: str | None, default: str) -> list[str]:
    """Languages to try in order: ``pt-BR`` -> ``pt-BR``, ``pt``, then ``default``.

    (The caller finally takes any language the template has.)
    """
    chain: list[str] = []
    if requested:
        parts = requested.split("-")
        chain.extend("-".join(parts[:n]) for n in range(len(parts), 0, -1))
    chain.append(default)
    return _unique(chain)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
