"""The active version of each template, kept in memory until the template changes.

Rendering used to read PostgreSQL on every call (60 % of template_service's CPU per render). An
entry here is tagged with the template's cache version (``cachever:template:<code>`` in Redis,
bumped after every committed change: libs/clients/cache.py); a render reads the current version
(one ``MGET`` for a whole batch) and reloads only what changed. Correct across replicas: whoever
changed the template bumped the version after committing, so a newer version always means a
reload, and a replica that loaded just before the change stored it under the old version.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from libs.clients.cache import VersionedCache
from libs.clients.templates import TEMPLATE_CACHE
from template_service.rendering import Content


@dataclass(frozen=True)
class ActiveTemplate:
    """What rendering needs of a template version (no database objects)."""

    code: str
    version: int
    language: str
    content: Content


class ActiveTemplates:
    def __init__(self, cache: VersionedCache | None, max_entries: int = 4096) -> None:
        self._cache = cache
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str | None], tuple[int, ActiveTemplate]] = (
            OrderedDict()
        )

    async def versions(self, codes: list[str]) -> dict[str, int | None]:
        """The current cache version of each code (None: unknown, do not use the memory)."""
        if self._cache is None or not codes:
            return dict.fromkeys(codes)
        return await self._cache.current_versions(TEMPLATE_CACHE, codes)

    def get(self, code: str, language: str | None, version: int | None) -> ActiveTemplate | None:
        if version is None:
            return None
        entry = self._entries.get((code, language))
        if entry is None or entry[0] != version:
            return None
        self._entries.move_to_end((code, language))
        return entry[1]

    def put(
        self, code: str, language: str | None, version: int | None, active: ActiveTemplate
    ) -> None:
        if version is None:
            return
        self._entries[(code, language)] = (version, active)
        self._entries.move_to_end((code, language))
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
