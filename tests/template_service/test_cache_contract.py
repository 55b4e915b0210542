"""The render cache of delivery services (libs.clients.templates) stays correct across changes."""

from __future__ import annotations

from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlmodel import select

from libs.clients.cache import VersionedCache
from libs.clients.http import ServiceClient, ServiceTokenProvider
from libs.clients.templates import RenderClient
from libs.storage.redis import Keys
from template_service.models import Template
from template_service.state import TemplateServiceState
from tests.support.servers import AppClient, live_server
from tests.template_service.conftest import TemplateApi, TokenFactory
from tests.template_service.factories import push_template


class FixedToken(ServiceTokenProvider):
    def __init__(self, token: str) -> None:
        self._fixed = token

    async def token(self) -> str:
        return self._fixed

    def invalidate(self) -> None:
        pass


class CommitCheckingCache(VersionedCache):
    """Records what another connection sees at the moment of each bump."""

    def __init__(self, state: TemplateServiceState, inner: VersionedCache) -> None:
        self._state = state
        self._inner = inner
        self.seen: list[tuple[str, list[tuple[str, int]]]] = []

    async def bump(self, kind: str, ident: str, keep_seconds: int = 7 * 86400) -> int:
        async with self._state.sessions() as session:  # its own connection and transaction
            rows = await session.exec(
                select(Template).where(Template.code == ident, Template.deleted_at.is_(None))  # type: ignore[union-attr]
            )
            self.seen.append((kind, sorted((t.language, t.active_version) for t in rows)))
        return await self._inner.bump(kind, ident, keep_seconds)


async def test_cache_is_bumped_only_after_the_change_is_committed(
    api: TemplateApi, client: AppClient
) -> None:
    state: TemplateServiceState = client.state
    spy = CommitCheckingCache(state, state.cache)
    state.cache = spy

    await api.create(push_template())
    await api.update("welcome_push", {"content": "v2"})
    await api.update("welcome_push", {"content": "v3", "activate": False})
    await api.request("POST", "/api/v1/templates/welcome_push/versions/1/activate")
    await api.request("DELETE", "/api/v1/templates/welcome_push")

    assert spy.seen == [
        ("template", [("en", 1)]),
        ("template", [("en", 2)]),
        ("template", [("en", 2)]),
        ("template", [("en", 1)]),
        ("template", []),
    ]


async def test_delivery_side_cache_sees_every_change(
    api: TemplateApi,
    client: AppClient,
    redis: Redis,
    keys: Keys,
    token_factory: TokenFactory,
) -> None:
    requests: list[str] = []

    async def count(
        _session: aiohttp.ClientSession, _context: object, params: aiohttp.TraceRequestStartParams
    ) -> None:
        requests.append(params.url.path)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(count)
    async with (
        live_server(client.asgi, lifespan="off") as url,
        aiohttp.ClientSession(trace_configs=[trace]) as http,
    ):
        service = ServiceClient("template_service", url, http, FixedToken(token_factory("service")))
        renderer = RenderClient(service, VersionedCache(redis, keys))
        variables: dict[str, Any] = {"name": "Ana", "avatar": "a", "link": "herald://x"}
        await api.create(push_template(content="first {{ name }}"))
        requests.clear()

        one = await renderer.render("welcome_push", None, variables)
        [stored] = [k async for k in redis.scan_iter(f"{keys.prefix}cache:template:*:-:*")]
        assert 0 < await redis.ttl(stored) <= 120  # a render read once leaves Redis soon
        two = await renderer.render("welcome_push", None, variables)
        assert (one.body, two.body, one.version) == ("first Ana", "first Ana", 1)
        assert len(requests) == 1  # the second came from Redis
        assert await redis.ttl(stored) > 86000  # read again: kept like any entry

        await api.update("welcome_push", {"content": "second {{ name }}"})
        three = await renderer.render("welcome_push", None, variables)
        assert (three.body, three.version) == ("second Ana", 2)

        await api.request("POST", "/api/v1/templates/welcome_push/versions/1/activate")
        four = await renderer.render("welcome_push", None, variables)
        assert (four.body, four.version) == ("first Ana", 1)


class BrokenCache(VersionedCache):
    def __init__(self) -> None:
        pass

    async def bump(self, kind: str, ident: str, keep_seconds: int = 7 * 86400) -> int:
        raise RedisConnectionError("redis is down")


async def test_a_failed_cache_bump_keeps_the_saved_change_and_says_so(
    api: TemplateApi, client: AppClient
) -> None:
    await api.create(push_template())
    client.state.cache = BrokenCache()

    response = await api.request("PUT", "/api/v1/templates/welcome_push", json={"content": "new"})

    assert response.status_code == 200
    assert "could not be invalidated" in response.json()["message"]
    current = (await api.request("GET", "/api/v1/templates/welcome_push")).json()["data"]
    assert (current["version"], current["content"]) == (2, "new")
