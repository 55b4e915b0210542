"""The dlq_service ASGI app: REST API, failed.queue consumer, archival, built in one lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

import structlog
from fastapi import FastAPI

from dlq_service.config import DlqSettings
from dlq_service.console.routes import install_console
from dlq_service.console.routes import router as console_router
from dlq_service.console.sessions import ConsoleSessions
from dlq_service.consumer import StoreFailedMessage, accept_any_body
from dlq_service.delivery_health import DeliveryProbe
from dlq_service.endpoints import router
from dlq_service.jobs import RepublishJobs
from dlq_service.notifications import RedisNotificationHistory
from dlq_service.redrive import RedrivePolicy, run_redrive
from dlq_service.service import DlqService, Pacer
from dlq_service.state import DlqState, dlq_state
from libs.http.app import create_app as create_service_app
from libs.http.lifespan import (
    consumer_ready,
    jwks_verifier,
    open_database,
    open_http_client,
    open_messaging,
    open_redis,
    postgres_ready,
    publisher_ready,
    queue_stats_refresh,
    redis_ready,
)
from libs.http.state import lifespan_state
from libs.messaging.consumer import QueueConsumer
from libs.messaging.queue_stats import QueueStats
from libs.messaging.topology import FAILED_QUEUE, PARKED_QUEUE, PARKED_ROUTING_KEY
from libs.storage.redis import Keys
from libs.storage.status_store import RedisStatusStore

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


async def _finish(task: asyncio.Task[None], stopping: asyncio.Event) -> None:
    stopping.set()
    await task


async def _stop_consumer(consumer: QueueConsumer[bytes], stopping: asyncio.Event) -> None:
    stopping.set()  # handlers waiting for the database give their message back
    await consumer.stop()


def create_app(settings: DlqSettings | None = None) -> FastAPI:
    settings = settings or DlqSettings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, object]]:
        async with AsyncExitStack() as stack:
            # Resources close in reverse order: re-drive, console jobs, maintenance, consumer
            # (lets in-flight inserts finish), publisher, broker connection, Redis, database,
            # HTTP client.
            http = open_http_client(stack, settings)
            engine, sessions = open_database(stack, settings.database_url)
            redis = open_redis(stack, settings.redis_url)
            keys = Keys(settings.redis_key_prefix)
            statuses = RedisStatusStore(redis, keys, settings.status_retention_seconds)
            connection, publisher = await open_messaging(stack, settings)
            dlq = DlqService(
                sessions=sessions,
                publisher=publisher,
                statuses=statuses,
                pacer=Pacer(settings.republish_rate_per_second),
            )
            stopping = asyncio.Event()
            queue_stats = QueueStats([FAILED_QUEUE, PARKED_QUEUE])
            stack.push_async_callback(queue_stats.close)
            consumer: QueueConsumer[bytes] = QueueConsumer(
                connection=connection,
                publisher=publisher,
                queue=FAILED_QUEUE,
                parse=accept_any_body,
                handler=StoreFailedMessage(dlq, stopping),
                service=settings.service_name,
                dead_letter_routing_key=PARKED_ROUTING_KEY,
                prefetch=settings.consumer_prefetch,
                stats=queue_stats,
            )
            await consumer.start()
            stack.push_async_callback(_stop_consumer, consumer, stopping)
            maintenance = asyncio.create_task(_maintain(dlq, settings))
            stack.push_async_callback(_cancel, maintenance)
            jobs = RepublishJobs(dlq)
            stack.push_async_callback(jobs.close)
            probe = DeliveryProbe(
                redis=redis,
                keys=keys,
                connection=connection,
                topology=settings.topology(),
                providers=settings.providers(),
            )
            if settings.auto_redrive_enabled:
                redrive_stopping = asyncio.Event()
                redrive = asyncio.create_task(
                    run_redrive(dlq, probe, RedrivePolicy.of(settings), redrive_stopping)
                )
                stack.push_async_callback(_finish, redrive, redrive_stopping)
            state = DlqState(
                settings=settings,
                engine=engine,
                redis=redis,
                http=http,
                statuses=statuses,
                publisher=publisher,
                verifier=jwks_verifier(settings, http),
                dlq=dlq,
                consumer=consumer,
                connection=connection,
                queue_stats=queue_stats,
                probe=probe,
                history=RedisNotificationHistory(statuses),
                sessions=ConsoleSessions(
                    redis, keys, settings.console_secret_key, settings.console_session_seconds
                ),
                jobs=jobs,
            )
            log.info("dlq.started", queue=FAILED_QUEUE)
            yield lifespan_state(state)
            log.info("dlq.stopping")

    app = create_service_app(
        service=settings.service_name,
        title="Herald DLQ service",
        description="Failed messages: list, inspect, republish, discard; the operator console.",
        lifespan=lifespan,
        routers=[router, console_router],
        readiness={
            "postgres": postgres_ready(lambda r: dlq_state.of(r).engine),
            "redis": redis_ready(lambda r: dlq_state.of(r).redis),
            "rabbitmq": publisher_ready(lambda r: dlq_state.of(r).publisher),
            "consumer": consumer_ready(lambda r: dlq_state.of(r).consumer),
        },
        metrics_refresh={
            "queues": queue_stats_refresh(
                lambda r: dlq_state.of(r).queue_stats, lambda r: dlq_state.of(r).connection
            ),
        },
        max_body_bytes=settings.max_body_bytes,
        metrics_token=settings.metrics_token,
    )
    install_console(app)
    return app
