"""The gateway's app: one lifespan opens Redis, the broker publisher and the clients, and yields
the typed :class:`GatewayState` the routes read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

import structlog
from fastapi import FastAPI

from gateway.config import GatewaySettings
from gateway.endpoints import HOT_ROUTES, router
from gateway.history import HistoryRecorder, NotificationHistory
from gateway.idempotency import RedisIdempotencyStore
from gateway.intake import NotificationIntake
from gateway.state import GatewayState, gateway_state
from libs.clients.cache import VersionedCache
from libs.clients.http import own_services
from libs.clients.templates import TemplateCatalog
from libs.clients.users import UserDirectory
from libs.http.app import create_app as create_service_app
from libs.http.lifespan import (
    jwks_verifier,
    open_database,
    open_http_client,
    open_messaging,
    open_redis,
    open_service_session,
    publisher_ready,
    redis_ready,
)
from libs.http.state import lifespan_state
from libs.storage.ratelimit import TokenBuckets
from libs.storage.redis import Keys
from libs.storage.status_store import RedisStatusStore

log = structlog.get_logger(__name__)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, object]]:
        async with AsyncExitStack() as stack:
            redis = open_redis(stack, settings.redis_url, auto_pipeline=True)
            http = open_http_client(stack, settings)
            engine, _ = open_database(stack, settings.database_url, pool_size=settings.db_pool_size)
            _, publisher = await open_messaging(stack, settings)
            keys = Keys(settings.redis_key_prefix)
            if settings.history_recorder:
                recorder = HistoryRecorder(
                    open_redis(stack, settings.redis_url),  # it blocks on the stream: its own
                    engine,
                    keys.history_stream(),
                    consumer=f"gateway-{uuid.uuid4().hex[:12]}",
                    linger_ms=settings.history_linger_ms,
                    retention=timedelta(days=settings.history_retention_days),
                )
                await recorder.start()
                stack.push_async_callback(recorder.stop)
            status = RedisStatusStore(redis, keys, settings.status_retention_seconds)
            users = templates = None
            if settings.verify_references:
                cache = VersionedCache(redis, keys)
                services = own_services(settings, open_service_session(stack, settings))
                users = UserDirectory(services.user_service, cache)
                templates = TemplateCatalog(services.template_service, cache)
            state = GatewayState(
                settings=settings,
                redis=redis,
                keys=keys,
                status=status,
                engine=engine,
                history=NotificationHistory(engine),
                rate_limits=TokenBuckets(
                    redis, rate=settings.rate_limit_per_second, capacity=settings.rate_limit_burst
                ),
                publisher=publisher,
                verifier=jwks_verifier(settings, http),
                intake=NotificationIntake(
                    idempotency=RedisIdempotencyStore(redis, keys),
                    status=status,
                    publisher=publisher,
                    users=users,
                    templates=templates,
                    idempotency_ttl=settings.idempotency_ttl_seconds,
                    pending_ttl=settings.idempotency_pending_seconds,
                    confirm_timeout=settings.publish_confirm_timeout_seconds,
                ),
            )
            log.info("service.started")
            yield lifespan_state(state)
        log.info("service.stopped")

    return create_service_app(
        service=settings.service_name,
        title="Herald gateway",
        description="Send email and push notifications; query their status.",
        lifespan=lifespan,
        routers=[router],
        hot_routes=HOT_ROUTES,
        readiness={
            "redis": redis_ready(lambda r: gateway_state.of(r).redis),
            "rabbitmq": publisher_ready(lambda r: gateway_state.of(r).publisher),
        },
        max_body_bytes=settings.max_body_bytes,
        body_limits={"/api/v1/notifications/batch": settings.batch_max_body_bytes},
        metrics_token=settings.metrics_token,
    )
