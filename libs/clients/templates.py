"""Rendering through template_service, with renders cached in Redis.

Cache kind ``template`` keyed by template code; the entry key adds the language and a hash of the
variables. template_service bumps the version after any change to the template (new version,
activation, rollback), so the next delivery renders the new content.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from libs.clients.batching import Coalescer
from libs.clients.cache import VersionedCache, mapped
from libs.clients.errors import UpstreamNotFound, UpstreamRejected
from libs.clients.http import ServiceClient
from libs.clients.models import Rendered
from libs.notification.message import Channel

TEMPLATE_CACHE = "template"


def variables_digest(variables: dict[str, Any]) -> str:
    return _digest(orjson.dumps(variables, option=orjson.OPT_SORT_KEYS))


def _digest(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()[:32]


@dataclass(frozen=True)
class RenderKey:
    code: str
    language: str | None
    variables: bytes
    """The variables as canonical JSON (hashable, and what is sent)."""


class RenderClient:
    """Renders through template_service's batch endpoint: the renders asked for together (in one
    loop turn, or while earlier requests are under way) by every message a consumer holds go in
    one request (:mod:`libs.clients.batching`)."""

    def __init__(
        self,
        client: ServiceClient,
        cache: VersionedCache,
        *,
        render_ttl: int = 3600,
        stale_ttl: int = 86400,
        unused_ttl: int = 120,
    ) -> None:
        """``unused_ttl``: how long a render nobody asked for again is kept (most carry one
        recipient's variables and are read once); one asked for again is kept ``stale_ttl``."""
        self._client = client
        self._cache = cache
        self._ttl = render_ttl
        self._stale_ttl = stale_ttl
        self._unused_ttl = unused_ttl
        self._renders: Coalescer[RenderKey, Any] = Coalescer(self._render_many)

    async def render(self, code: str, language: str | None, variables: dict[str, Any]) -> Rendered:
        canonical = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS)
        key = RenderKey(code, language, canonical)

        async def fetch() -> Any:
            return await self._renders.load(key)

        extra = f"{language or '-'}:{_digest(canonical)}"
        data = await self._cache.get_through(
            TEMPLATE_CACHE,
            code,
            fetch,
            fresh_ttl=self._ttl,
            stale_ttl=self._stale_ttl,
            extra=extra,
            trial_ttl=self._unused_ttl,
        )
        return Rendered.model_validate(data)

    async def _render_many(self, keys: list[RenderKey]) -> dict[RenderKey, Any]:
        items = [
            {"code": k.code, "language": k.language, "variables": orjson.loads(k.variables)}
            for k in keys
        ]
        outcomes = await self._client.request("POST", "/api/v1/renders", json={"items": items})
        return {key: _outcome(outcome) for key, outcome in zip(keys, outcomes, strict=True)}


def _outcome(outcome: dict[str, Any]) -> Any:
    if outcome.get("ok"):
        return outcome["result"]
    code = str(outcome.get("error") or "render_failed")
    message = str(outcome.get("message") or code)
    if code == "template_not_found":
        return UpstreamNotFound("template_service", message, 404)
    return UpstreamRejected("template_service", message, 422, code=code)


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

    def channel_of(self, code: str) -> asyncio.Future[Channel]:
        """The template's channel; raises UpstreamNotFound if there is no such template. The
        lookup starts at the call (:meth:`VersionedCache.get_through`)."""

        async def fetch() -> Any:
            data = await self._client.request("GET", f"/api/v1/templates/{code}")
            return {"type": data["type"]}

        lookup = self._cache.get_through(
            TEMPLATE_CACHE,
            code,
            fetch,
            fresh_ttl=self._ttl,
            stale_ttl=self._stale_ttl,
            extra="meta",
        )
        return mapped(lookup, lambda data: Channel(data["type"]))
