"""The pieces every service's lifespan is built from, and the standard readiness checks.

A lifespan opens each client on an :class:`~contextlib.AsyncExitStack` right after creating it,
so a start-up that fails half-way (the broker is down, a migration is missing) closes what it had
opened, in reverse order, and a normal shutdown does the same. Then it builds its typed state
(:mod:`libs.http.state`) and yields it.

SQLAlchemy is imported by the services that open a database, not by the others (half a second of
CPU at every start of email_service and push_service).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import httpx
from aio_pika.abc import AbstractRobustConnection
from fastapi import Request
from redis.asyncio import Redis

from libs.http.app import MetricsRefresh, ReadinessCheck
from libs.http.auth import JWKS_PATH, JwksVerifier
from libs.http.token_cache import CachedVerifier
from libs.messaging.connection import open_broker
from libs.messaging.publisher import ConfirmedPublisher
from libs.messaging.queue_stats import QueueStats
from libs.settings import MessagingSettings, ServiceSettings
from libs.storage.redis import create_redis

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
    from sqlmodel.ext.asyncio.session import AsyncSession

# Idle keep-alive connections are dropped by our clients before the servers drop them (uvicorn
# closes idle connections after 5 s), so no request is written into a connection being closed.
CLIENT_KEEPALIVE_EXPIRY_SECONDS = 4.0


def open_redis(stack: AsyncExitStack, url: str, *, auto_pipeline: bool = False) -> Redis:
    """``auto_pipeline``: for the hot path (see :class:`libs.storage.redis.AutoPipelineRedis`)."""
    redis = create_redis(url, auto_pipeline=auto_pipeline)
    stack.push_async_callback(redis.aclose)
    return redis


def open_http_client(
    stack: AsyncExitStack,
    settings: ServiceSettings,
    *,
    max_connections: int = 100,
    max_keepalive_connections: int = 20,
) -> httpx.AsyncClient:
    """The service's one HTTP client for calls to other services (and HTTP providers)."""
    http = httpx.AsyncClient(
        timeout=settings.http_timeout_seconds,
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive_connections,
            keepalive_expiry=CLIENT_KEEPALIVE_EXPIRY_SECONDS,
        ),
    )
    stack.push_async_callback(http.aclose)
    return http


def open_service_session(
    stack: AsyncExitStack, settings: ServiceSettings, *, max_connections: int = 100
) -> aiohttp.ClientSession:
    """The session for calls to our own services (:mod:`libs.clients.http`)."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=max_connections, keepalive_timeout=CLIENT_KEEPALIVE_EXPIRY_SECONDS
        ),
        timeout=aiohttp.ClientTimeout(total=settings.http_timeout_seconds),
    )
    stack.push_async_callback(session.close)
    return session


def jwks_verifier(settings: ServiceSettings, http: httpx.AsyncClient) -> CachedVerifier:
    """Verifies tokens with user_service's public keys (cached; refetched for an unknown kid);
    a token verified once is remembered until it expires (:mod:`libs.http.token_cache`)."""
    return CachedVerifier(
        JwksVerifier(
            f"{settings.user_service_url.rstrip('/')}{JWKS_PATH}",
            http,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            cache_seconds=settings.jwks_cache_seconds,
            fetch_timeout=settings.http_timeout_seconds,
        )
    )


def open_database(
    stack: AsyncExitStack, url: str, *, pool_size: int = 10
) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    from libs.storage.db import create_engine, session_factory

    engine = create_engine(url, pool_size=pool_size)
    stack.push_async_callback(engine.dispose)
    return engine, session_factory(engine)


async def open_messaging(
    stack: AsyncExitStack, settings: MessagingSettings
) -> tuple[AbstractRobustConnection, ConfirmedPublisher]:
    """Connect (with retries), declare the topology, open a confirmed publisher."""
    connection, publisher = await open_broker(
        settings.rabbitmq_url,
        name=settings.service_name,
        topology=settings.topology(),
        confirm_timeout=settings.publish_confirm_timeout_seconds,
    )
    stack.push_async_callback(connection.close)
    stack.push_async_callback(publisher.close)
    return connection, publisher


# ---------------------------------------------------------------------------------------------
# Readiness checks: each takes a getter of what it checks from the request's state.


def redis_ready(get: Callable[[Request], Redis]) -> ReadinessCheck:
    async def check(request: Request) -> Mapping[str, Any] | None:
        await get(request).ping()
        return None

    return check


def postgres_ready(get: Callable[[Request], AsyncEngine]) -> ReadinessCheck:
    from libs.storage.db import ping

    async def check(request: Request) -> Mapping[str, Any] | None:
        return await ping(get(request))

    return check


def publisher_ready(get: Callable[[Request], ConfirmedPublisher]) -> ReadinessCheck:
    async def check(request: Request) -> Mapping[str, Any] | None:
        if not get(request).ready:
            raise ConnectionError("the publishing channel is closed")
        return None

    return check


class Consuming(Protocol):
    """What a consumer readiness check reads (``libs.messaging.consumer.QueueConsumer``)."""

    @property
    def queue(self) -> str: ...

    @property
    def consuming(self) -> bool: ...

    @property
    def in_flight(self) -> int: ...


def consumer_ready(get: Callable[[Request], Consuming]) -> ReadinessCheck:
    """Ready while the consumer is subscribed to its queue on a live channel."""

    async def check(request: Request) -> Mapping[str, Any] | None:
        consumer = get(request)
        if not consumer.consuming:
            raise ConnectionError(f"not consuming {consumer.queue}")
        return {"queue": consumer.queue, "in_flight": consumer.in_flight}

    return check


def queue_stats_refresh(
    get_stats: Callable[[Request], QueueStats],
    get_connection: Callable[[Request], AbstractRobustConnection],
) -> MetricsRefresh:
    """Refresh queue depth, consumers and oldest-message age when Prometheus scrapes."""

    async def refresh(request: Request) -> None:
        await get_stats(request).refresh(get_connection(request))

    return refresh
