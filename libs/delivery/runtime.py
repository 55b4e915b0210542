"""The process around a delivery pipeline: what email_service and push_service share.

The lifespan connects to Redis and RabbitMQ, declares the topology, builds the clients, the status
store, the send claims and the channel adapter, then starts consuming. On shutdown (SIGTERM) it
stops taking messages, lets in-flight ones finish, and closes everything in reverse order. The HTTP
side serves only health, readiness and metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

import httpx
import structlog
from aio_pika.abc import AbstractRobustConnection
from fastapi import FastAPI, Request
from pydantic import Field
from redis.asyncio import Redis

from libs.clients.cache import VersionedCache
from libs.clients.http import own_services
from libs.clients.templates import RenderClient
from libs.clients.users import UserDirectory
from libs.delivery.breaker import BreakerConfig, CircuitBreaker
from libs.delivery.claims import InstanceHeartbeat, SendClaims, new_instance_id
from libs.delivery.pipeline import ChannelAdapter, DeliveryPipeline
from libs.delivery.providers import GuardedProvider, Provider
from libs.http.app import create_app
from libs.http.lifespan import (
    consumer_ready,
    open_http_client,
    open_messaging,
    open_redis,
    open_service_session,
    queue_stats_refresh,
    redis_ready,
)
from libs.http.state import lifespan_state, state_dependency
from libs.messaging.consumer import QueueConsumer
from libs.messaging.queue_stats import QueueStats
from libs.messaging.topology import delay_queue, work_queue
from libs.notification.message import Channel, NotificationMessage
from libs.settings import MessagingSettings
from libs.storage.ratelimit import TokenBucket
from libs.storage.redis import Keys
from libs.storage.status_store import RedisStatusStore

log = structlog.get_logger(__name__)

P = TypeVar("P")


class DeliverySettings(MessagingSettings):
    """Settings shared by the delivery services."""

    # Circuit breaker of each provider (shared by replicas through Redis).
    breaker_failure_threshold: int = 5
    breaker_window_seconds: float = 60.0
    breaker_open_seconds: float = 30.0
    breaker_half_open_successes: int = 2
    # Longest a send waits for its provider's rate quota before trying the next provider.
    rate_limit_max_wait_seconds: float = 2.0
    user_cache_seconds: int = 300
    preferences_cache_seconds: int = 3600
    render_cache_seconds: int = 3600
    # A render nobody asked for again (one recipient's variables) is dropped after this.
    render_cache_unused_seconds: int = Field(default=120, ge=1)
    stale_cache_seconds: int = 86400
    claim_lease_ms: int = 60_000
    # A consumer's liveness key outlives its last heartbeat by this much: well above the Redis
    # socket timeout (5 s), so a slow Redis never makes a living holder look dead.
    instance_liveness_seconds: float = Field(default=15.0, ge=6.0)
    shutdown_grace_seconds: float = 25.0


class ManagedAdapter(ChannelAdapter, Protocol):
    async def close(self) -> None: ...

    async def health(self) -> Mapping[str, Any]:
        """Provider details for /ready (order, breaker states)."""
        ...


def guard(
    provider: Provider[P],
    *,
    redis: Redis,
    keys: Keys,
    settings: DeliverySettings,
    rate_per_second: float = 0,
    burst: int | None = None,
) -> GuardedProvider[P]:
    """Wrap a provider with its breaker and (if ``rate_per_second`` > 0) its shared quota."""
    limiter = None
    if rate_per_second > 0:
        limiter = TokenBucket(
            redis,
            keys.provider_rate_limit(provider.name),
            rate=rate_per_second,
            capacity=burst or max(1, int(rate_per_second)),
        )
    breaker = CircuitBreaker(
        redis,
        keys.breaker(provider.name),
        provider.name,
        BreakerConfig(
            failure_threshold=settings.breaker_failure_threshold,
            window_seconds=settings.breaker_window_seconds,
            open_seconds=settings.breaker_open_seconds,
            half_open_successes=settings.breaker_half_open_successes,
        ),
    )
    return GuardedProvider(provider, breaker, limiter, settings.rate_limit_max_wait_seconds)


@dataclass(frozen=True)
class AdapterDeps:
    """What an adapter factory may use."""

    http: httpx.AsyncClient
    redis: Redis
    keys: Keys
    users: UserDirectory
    instance_id: str
    settings: DeliverySettings


AdapterFactory = Callable[[AdapterDeps], Awaitable[ManagedAdapter]]


@dataclass(kw_only=True)
class DeliveryState:
    """What a delivery service's lifespan builds (its HTTP side reads it for readiness)."""

    settings: DeliverySettings
    redis: Redis
    consumer: QueueConsumer[NotificationMessage]
    adapter: ManagedAdapter
    pipeline: DeliveryPipeline
    instance_id: str
    connection: AbstractRobustConnection
    queue_stats: QueueStats


delivery_state = state_dependency(DeliveryState)


def create_delivery_app(
    *, settings: DeliverySettings, channel: Channel, adapter_factory: AdapterFactory, title: str
) -> FastAPI:
    service = settings.service_name

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, object]]:
        async with AsyncExitStack() as stack:
            # Closed in reverse: the consumer first (in-flight messages finish while their
            # claims' holder is still alive), then the adapter, heartbeat, broker, clients.
            redis = open_redis(stack, settings.redis_url, auto_pipeline=True)
            http = open_http_client(
                stack, settings, max_connections=200, max_keepalive_connections=50
            )
            connection, publisher = await open_messaging(stack, settings)
            # Commit marks need a client without a socket timeout (libs.delivery.claims).
            commit_redis = Redis.from_url(settings.redis_url, socket_connect_timeout=5)
            stack.push_async_callback(commit_redis.aclose)

            keys = Keys(settings.redis_key_prefix)
            cache = VersionedCache(redis, keys)
            services = own_services(settings, open_service_session(stack, settings))
            users = UserDirectory(
                services.user_service,
                cache,
                user_ttl=settings.user_cache_seconds,
                preferences_ttl=settings.preferences_cache_seconds,
                stale_ttl=settings.stale_cache_seconds,
            )
            renderer = RenderClient(
                services.template_service,
                cache,
                render_ttl=settings.render_cache_seconds,
                stale_ttl=settings.stale_cache_seconds,
                unused_ttl=settings.render_cache_unused_seconds,
            )
            instance_id = new_instance_id(service)
            heartbeat = InstanceHeartbeat(
                redis, keys, instance_id, ttl_ms=int(settings.instance_liveness_seconds * 1000)
            )
            await heartbeat.start()
            stack.push_async_callback(heartbeat.stop)
            claims = SendClaims(
                redis,
                keys,
                instance_id,
                lease_ms=settings.claim_lease_ms,
                sent_ttl_seconds=settings.status_retention_seconds,
                commit_redis=commit_redis,
            )
            adapter = await adapter_factory(
                AdapterDeps(http, redis, keys, users, instance_id, settings)
            )
            stack.push_async_callback(adapter.close)
            policy = settings.retry_policy(channel)
            queue_stats = QueueStats(
                [work_queue(channel), *(delay_queue(channel, d) for d in policy.queue_delays())]
            )
            stack.push_async_callback(queue_stats.close)
            pipeline = DeliveryPipeline(
                adapter=adapter,
                users=users,
                renderer=renderer,
                status=RedisStatusStore(redis, keys, settings.status_retention_seconds),
                claims=claims,
                service=service,
            )
            consumer: QueueConsumer[NotificationMessage] = QueueConsumer(
                connection=connection,
                publisher=publisher,
                queue=work_queue(channel),
                parse=NotificationMessage.from_bytes,
                handler=pipeline.handle,
                service=service,
                prefetch=settings.consumer_prefetch,
                retry_policy=policy,
                delay_queue=partial(delay_queue, channel),
                on_dead_letter=pipeline.on_dead_letter,
                stats=queue_stats,
            )
            await consumer.start()
            stack.push_async_callback(_stop_consumer, consumer, settings.shutdown_grace_seconds)
            log.info("service.started", instance=instance_id, queue=work_queue(channel))
            yield lifespan_state(
                DeliveryState(
                    settings=settings,
                    redis=redis,
                    consumer=consumer,
                    adapter=adapter,
                    pipeline=pipeline,
                    instance_id=instance_id,
                    connection=connection,
                    queue_stats=queue_stats,
                )
            )
        log.info("service.stopped")

    async def providers_ready(request: Request) -> Mapping[str, Any]:
        return await delivery_state.of(request).adapter.health()

    async def breakers_now(request: Request) -> None:
        await delivery_state.of(request).adapter.health()  # reads each breaker from Redis

    return create_app(
        service=service,
        title=title,
        lifespan=lifespan,
        readiness={
            "redis": redis_ready(lambda r: delivery_state.of(r).redis),
            "rabbitmq": consumer_ready(lambda r: delivery_state.of(r).consumer),
            "providers": providers_ready,
        },
        metrics_refresh={
            "breakers": breakers_now,
            "queues": queue_stats_refresh(
                lambda r: delivery_state.of(r).queue_stats,
                lambda r: delivery_state.of(r).connection,
            ),
        },
        max_body_bytes=settings.max_body_bytes,
        metrics_token=settings.metrics_token,
        database=False,
    )


async def _stop_consumer(consumer: QueueConsumer[NotificationMessage], grace: float) -> None:
    log.info("service.stopping", in_flight=consumer.in_flight)
    await consumer.stop(grace)
