"""The dlq_service ASGI app: REST API, failed.queue consumer, archival, built in one lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import structlog
from fastapi import FastAPI, Request

from dlq_service.config import DlqSettings
from dlq_service.consumer import StoreFailedMessage, accept_any_body
from dlq_service.endpoints import router
from dlq_service.service import DlqService, Pacer
from libs.http.app import create_app as create_service_app
from libs.http.auth import JWKS_PATH, JwksVerifier
from libs.messaging.connection import open_broker
from libs.messaging.consumer import QueueConsumer
from libs.messaging.publisher import ConfirmedPublisher
from libs.messaging.topology import FAILED_QUEUE
from libs.storage.db import create_engine, ping, session_factory
from libs.storage.redis import Keys, create_redis
from libs.storage.status_store import StatusStore

log = structlog.get_logger(__name__)


async def _maintain(dlq: DlqService, settings: DlqSettings) -> None:
    """Archive what outlived the retention and refresh the pending gauge, periodically."""
    retention = timedelta(days=settings.retention_days)
    while True:
        await asyncio.sleep(settings.maintenance_interval_seconds)
        try:
            await dlq.archive_expired(retention)
            await dlq.refresh_pending_gauge()
        except Exception as exc:  # a failed pass is retried on the next tick
            log.warning("dlq.maintenance_failed", error=repr(exc))


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stop_consumer(consumer: QueueConsumer[bytes], stopping: asyncio.Event) -> None:
    stopping.set()  # handlers waiting for the database give their message back
    await consumer.stop()


async def _postgres_ready(request: Request) -> Mapping[str, Any] | None:
    return await ping(request.app.state.engine)


async def _redis_ready(request: Request) -> Mapping[str, Any] | None:
    await request.app.state.redis.ping()
    return None


async def _consumer_ready(request: Request) -> Mapping[str, Any] | None:
    consumer: QueueConsumer[bytes] = request.app.state.consumer
    if not consumer.consuming:
        raise RuntimeError(f"not consuming {FAILED_QUEUE}")
    return {"queue": FAILED_QUEUE, "in_flight": consumer.in_flight}


async def _broker_ready(request: Request) -> Mapping[str, Any] | None:
    publisher: ConfirmedPublisher = request.app.state.publisher
    if not publisher.ready:
        raise RuntimeError("the publishing channel is closed")
    return None


def create_app(settings: DlqSettings | None = None) -> FastAPI:
    settings = settings or DlqSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            # Resources close in reverse order: maintenance, consumer (lets in-flight inserts
            # finish), publisher, broker connection, Redis, database, HTTP client.
            http = httpx.AsyncClient(timeout=settings.http_timeout_seconds)
            stack.push_async_callback(http.aclose)
            app.state.verifier = JwksVerifier(
                f"{settings.user_service_url.rstrip('/')}{JWKS_PATH}",
                http,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                cache_seconds=settings.jwks_cache_seconds,
            )

            engine = create_engine(settings.database_url)
            stack.push_async_callback(engine.dispose)
            redis = create_redis(settings.redis_url)
            stack.push_async_callback(redis.aclose)
            statuses = StatusStore(
                redis, Keys(settings.redis_key_prefix), settings.status_retention_seconds
            )

            connection, publisher = await open_broker(
                settings.rabbitmq_url,
                name=settings.service_name,
                topology=settings.topology(),
                confirm_timeout=settings.publish_confirm_timeout_seconds,
            )
            stack.push_async_callback(connection.close)
            stack.push_async_callback(publisher.close)

            dlq = DlqService(
                sessions=session_factory(engine),
                publisher=publisher,
                statuses=statuses,
                pacer=Pacer(settings.republish_rate_per_second),
            )
            stopping = asyncio.Event()
            consumer: QueueConsumer[bytes] = QueueConsumer(
                connection=connection,
                publisher=publisher,
                queue=FAILED_QUEUE,
                parse=accept_any_body,
                handler=StoreFailedMessage(dlq, stopping),
                service=settings.service_name,
                prefetch=settings.consumer_prefetch,
            )
            app.state.engine = engine
            app.state.redis = redis
            app.state.statuses = statuses
            app.state.publisher = publisher
            app.state.dlq = dlq
            app.state.consumer = consumer

            await consumer.start()
            stack.push_async_callback(_stop_consumer, consumer, stopping)
            maintenance = asyncio.create_task(_maintain(dlq, settings))
            stack.push_async_callback(_cancel, maintenance)
            log.info("dlq.started", queue=FAILED_QUEUE)
            yield
            log.info("dlq.stopping")

    app = create_service_app(
        service=settings.service_name,
        title="Herald DLQ service",
        description="Failed messages: list, inspect, republish, discard.",
        lifespan=lifespan,
        routers=[router],
        readiness={
            "postgres": _postgres_ready,
            "redis": _redis_ready,
            "rabbitmq": _broker_ready,
            "consumer": _consumer_ready,
        },
        max_body_bytes=settings.max_body_bytes,
    )
    app.state.settings = settings
    return app
