"""The gateway's app: its lifespan builds Redis, the broker publisher and the clients once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import structlog
from fastapi import FastAPI, Request

from gateway.config import GatewaySettings
from gateway.endpoints import router
from gateway.intake import NotificationIntake
from libs.clients.cache import VersionedCache
from libs.clients.http import ServiceClient, ServiceTokenProvider
from libs.clients.templates import TemplateCatalog
from libs.clients.users import UserDirectory
from libs.http.app import create_app as create_service_app
from libs.http.auth import JWKS_PATH, JwksVerifier
from libs.messaging.connection import open_broker
from libs.storage.ratelimit import TokenBuckets
from libs.storage.redis import Keys, create_redis
from libs.storage.status_store import StatusStore

log = structlog.get_logger(__name__)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = create_redis(settings.redis_url)
        http = httpx.AsyncClient(timeout=settings.http_timeout_seconds)
        connection, publisher = await open_broker(
            settings.rabbitmq_url,
            name=settings.service_name,
            topology=settings.topology(),
            confirm_timeout=settings.publish_confirm_timeout_seconds,
        )
        keys = Keys(settings.redis_key_prefix)
        cache = VersionedCache(redis, keys)
        tokens = ServiceTokenProvider(
            http,
            settings.user_service_url,
            settings.service_account_email,
            settings.service_account_password,
        )
        users = templates = None
        if settings.verify_references:
            users = UserDirectory(
                ServiceClient("user_service", settings.user_service_url, http, tokens), cache
            )
            templates = TemplateCatalog(
                ServiceClient("template_service", settings.template_service_url, http, tokens),
                cache,
            )
        status = StatusStore(redis, keys, settings.status_retention_seconds)
        app.state.settings = settings
        app.state.redis = redis
        app.state.keys = keys
        app.state.status = status
        app.state.rate_limits = TokenBuckets(
            redis, rate=settings.rate_limit_per_second, capacity=settings.rate_limit_burst
        )
        app.state.publisher = publisher
        app.state.verifier = JwksVerifier(
            f"{settings.user_service_url.rstrip('/')}{JWKS_PATH}",
            http,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            cache_seconds=settings.jwks_cache_seconds,
        )
        app.state.intake = NotificationIntake(
            redis=redis,
            keys=keys,
            status=status,
            publisher=publisher,
            users=users,
            templates=templates,
            idempotency_ttl=settings.idempotency_ttl_seconds,
            pending_ttl=settings.idempotency_pending_seconds,
            confirm_timeout=settings.publish_confirm_timeout_seconds,
        )
        log.info("service.started")
        try:
            yield
        finally:
            await publisher.close()
            await connection.close()
            await http.aclose()
            await redis.aclose()
            log.info("service.stopped")

    async def redis_ready(request: Request) -> dict[str, Any]:
        await request.app.state.redis.ping()
        return {}

    async def broker_ready(request: Request) -> dict[str, Any]:
        if not request.app.state.publisher.ready:
            raise ConnectionError("no open publisher channel")
        return {}

    return create_service_app(
        service=settings.service_name,
        title="Herald gateway",
        description="Send email and push notifications; query their status.",
        lifespan=lifespan,
        routers=[router],
        readiness={"redis": redis_ready, "rabbitmq": broker_ready},
        max_body_bytes=settings.max_body_bytes,
    )
