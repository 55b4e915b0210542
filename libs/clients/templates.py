"""Rendering through template_service, with renders cached in Redis.

Cache kind ``template`` keyed by template code; the entry key adds the language and a hash of the
variables. template_service bumps the version after any change to the template (new version,
activation, rollback), so the next delivery renders the new content.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from libs.clients.cache import VersionedCache
from libs.clients.http import ServiceClient
from libs.clients.models import Rendered
from libs.notification.message import Channel

TEMPLATE_CACHE = "template"


def variables_digest(variables: dict[str, Any]) -> str:
    canonical = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:32]


class RenderClient:
    def __init__(
        self,
        client: ServiceClient,
        cache: VersionedCache,
        *,
        render_ttl: int = 3600,
        stale_ttl: int = 86400,
    ) -> None:
        self._client = client
        self._cache = cache
        self._ttl = render_ttl
        self._stale_ttl = stale_ttl

    async def render(self, code: str, language: str | None, variables: dict[str, Any]) -> Rendered:
        body = {"variables": variables, "language": language}

        async def fetch() -> Any:
            return await self._client.request("POST", f"/api/v1/templates/{code}/render", json=body)

        extra = f"{language or '-'}:{variables_digest(variables)}"
        data = await self._cache.get_through(
            TEMPLATE_CACHE, code, fetch, fresh_ttl=self._ttl, stale_ttl=self._stale_ttl, extra=extra
        )
        return Rendered.model_validate(data)


class TemplateCatalog:
    """What the gateway checks before accepting: does the template exist, for which channel."""

    def __init__(
        self,
        client: ServiceClient,
        cache: VersionedCache,
        *,
        ttl: int = 3600,
        stale_ttl: int = 86400,
    ) -> None:
        self._client = client
        self._cache = cache
        self._ttl = ttl
        self._stale_ttl = stale_ttl

    async def channel_of(self, code: str) -> Channel:
        async def fetch() -> Any:
            data = await self._client.request("GET", f"/api/v1/templates/{code}")
            return {"type": data["type"]}

        data = await self._cache.get_through(
            TEMPLATE_CACHE,
            code,
            fetch,
            fresh_ttl=self._ttl,
            stale_ttl=self._stale_ttl,
            extra="meta",
        )
        return Channel(data["type"])
