"""The health of delivery as operators see it: each provider's breaker and each queue's depth.

Breaker states are read from Redis, where the delivery services keep them (one hash per
provider, shared by every replica; ``libs/delivery/breaker.py``). Queue depths come from passive
declares over dlq_service's own broker connection: a passive declare answers with the number of
ready messages and consumers and changes nothing; no management plugin is assumed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aio_pika.exceptions import AMQPError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from libs.delivery.breaker import BreakerState
from libs.messaging.topology import (
    DIRECT_EXCHANGE,
    FAILED_QUEUE,
    PARKED_QUEUE,
    QueueSpec,
    Topology,
    routing_key,
)
from libs.notification.message import Channel
from libs.storage.redis import Keys

log = structlog.get_logger(__name__)

QueueKind = Literal["work", "retry", "failed"]


@dataclass(frozen=True)
class BreakerView:
    provider: str
    channel: Channel
    state: BreakerState | None
    """None when Redis could not be read."""
    failures: int = 0
    opened_at: datetime | None = None


@dataclass(frozen=True)
class QueueDepth:
    name: str
    kind: QueueKind
    channel: Channel | None
    messages: int | None
    """Ready messages (None when the queue could not be read)."""
    consumers: int | None


def _channel(key: object) -> Channel | None:
    return next((c for c in Channel if routing_key(c) == key), None)


def _kind(spec: QueueSpec) -> tuple[QueueKind, Channel | None]:
    """What a queue of the topology is for: the DLQ's own queues, a delay queue (it dead-letters
    back to the work exchange), or a work queue (bound to the work exchange)."""
    if spec.name in (FAILED_QUEUE, PARKED_QUEUE):
        return "failed", None
    if spec.arguments.get("x-dead-letter-exchange") == DIRECT_EXCHANGE:
        return "retry", _channel(spec.arguments.get("x-dead-letter-routing-key"))
    return "work", next((_channel(key) for _, key in spec.bindings), None)


class DeliveryProbe:
    """Reads breakers and queue depths; ``providers`` names each channel's providers in order."""

    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
        connection: AbstractRobustConnection,
        topology: Topology,
        providers: Mapping[Channel, Sequence[str]],
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._connection = connection
        self._queues = [(q.name, *_kind(q)) for q in topology.queues]
        self._providers = providers

    async def breakers(self) -> list[BreakerView]:
        names = [(c, p) for c, ps in self._providers.items() for p in ps]
        try:
            pipe = self._redis.pipeline(transaction=False)
            for _, provider in names:
                pipe.hmget(self._keys.breaker(provider), "state", "failures", "opened_at")
            raw = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("dlq.breakers_unreadable", error=repr(exc))
            return [BreakerView(p, c, None) for c, p in names]
        views = []
        for (channel, provider), (state, failures, opened_at) in zip(names, raw, strict=True):
            current = BreakerState(state.decode()) if state else BreakerState.CLOSED
            views.append(
                BreakerView(
                    provider=provider,
                    channel=channel,
                    state=current,
                    failures=int(failures or 0) if current is BreakerState.CLOSED else 0,
                    opened_at=(
                        datetime.fromtimestamp(int(opened_at) / 1000, UTC)
                        if opened_at and current is not BreakerState.CLOSED
                        else None
                    ),
                )
            )
        return views

    async def closed_channels(self) -> list[Channel]:
        """Channels whose every provider's breaker is closed (none unreadable)."""
        views = await self.breakers()
        return [
            channel
            for channel in self._providers
            if all(v.state is BreakerState.CLOSED for v in views if v.channel is channel)
        ]

    async def queues(self) -> list[QueueDepth]:
        depths: list[QueueDepth] = []
        amqp: AbstractChannel | None = None
        try:
            for name, kind, channel in self._queues:
                try:
                    if amqp is None or amqp.is_closed:
                        amqp = await self._connection.channel()
                    declared = await amqp.declare_queue(name, passive=True)
                    result = declared.declaration_result
                    depths.append(
                        QueueDepth(
                            name,
                            kind,
                            channel,
                            int(result.message_count or 0),
                            int(result.consumer_count or 0),
                        )
                    )
                except (AMQPError, OSError, RuntimeError) as exc:
                    # a failed passive declare closes the AMQP channel: the next one reopens it
                    log.warning("dlq.queue_unreadable", queue=name, error=repr(exc))
                    depths.append(QueueDepth(name, kind, channel, None, None))
        finally:
            if amqp is not None and not amqp.is_closed:
                await amqp.close()
        return depths
