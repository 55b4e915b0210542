"""Queue depth and the age of the oldest message, for the queues a process consumes or feeds.

Depth and consumers come from a passive ``queue.declare`` at each scrape (one round trip per
queue; it moves nothing).

The age of the oldest message needs more care: AMQP cannot look at a queue's head without taking
it, and a ``basic.get`` followed by a requeue would reorder the queue, count as a delivery attempt
on quorum queues (``x-delivery-limit``) and fight the consumers for messages. RabbitMQ's own
``head_message_timestamp`` exists only in the management API and only for classic queues. So each
process bounds the age from what it already sees:

- every message carries its enqueue time: the AMQP ``timestamp`` our publisher sets (seconds), or,
  for a message the broker moved here (a delay queue expired it back to its work queue), the
  ``time`` of its latest ``x-death`` entry;
- a queue hands out normal-priority messages in order, so when a consumer takes one enqueued at
  ``t``, every normal-priority message still in the queue was enqueued at ``t`` or later;
- a queue seen empty at ``e`` holds nothing enqueued before ``e``.

Hence: oldest age <= now - max(enqueue time of the last message taken, last time seen empty).
While the queue is consumed this is tight (the next message was enqueued right after the last
one taken); while nothing takes from it the bound grows with the clock, which is the point of the
alert; after an idle spell it can overstate the age of a message that just arrived by at most one
scrape interval. Each replica keeps its own bound; all are true, so the tightest is the minimum
over replicas (what the alert rules and the dashboard use). Messages a delay queue returns tell
the age bound of that delay queue too: they entered it at their ``timestamp``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection

from libs.metrics import QUEUE_CONSUMERS, QUEUE_MESSAGES, QUEUE_OLDEST_AGE

log = structlog.get_logger(__name__)


def _epoch(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def enqueue_times(
    queue: str, headers: Mapping[str, Any], timestamp: datetime | None
) -> list[tuple[str, float]]:
    """(queue, when the message entered it) for the queue it was taken from and, if the broker
    moved it here from another queue (``x-death``), for that queue too."""
    sent = _epoch(timestamp)
    deaths = headers.get("x-death")
    if isinstance(deaths, list | tuple) and deaths and isinstance(deaths[0], Mapping):
        latest = deaths[0]
        moved_at = _epoch(latest.get("time"))
        times = [(queue, moved_at)] if moved_at is not None else []
        source = latest.get("queue")
        if isinstance(source, str) and sent is not None and source != queue:
            times.append((source, sent))
        return times
    return [(queue, sent)] if sent is not None else []


class QueueStats:
    """Depth, consumers and oldest-message age of ``queues``, refreshed at each scrape."""

    def __init__(self, queues: Sequence[str]) -> None:
        self.queues = tuple(queues)
        self._last_taken: dict[str, float] = {}
        self._seen_empty: dict[str, float] = {}
        self._amqp_channel: AbstractChannel | None = None

    def taken(
        self, queue: str, headers: Mapping[str, Any], timestamp: datetime | None, priority: int
    ) -> None:
        """A consumer took this message (called for every message, before handling it)."""
        if priority:
            return  # higher priorities overtake: only normal ones leave in enqueue order
        for name, entered in enqueue_times(queue, headers, timestamp):
            if name in self.queues and entered > self._last_taken.get(name, 0.0):
                self._last_taken[name] = entered

    def oldest_age(self, queue: str, depth: int, now: float) -> float:
        if depth == 0:
            self._seen_empty[queue] = now
            return 0.0
        known = max(self._last_taken.get(queue, 0.0), self._seen_empty.get(queue, 0.0))
        return max(0.0, now - known) if known else math.nan

    async def refresh(self, connection: AbstractConnection) -> None:
        """Passive-declare each queue and update the gauges (skips a queue that is missing)."""
        amqp_channel = self._amqp_channel
        if amqp_channel is None or amqp_channel.is_closed:
            amqp_channel = self._amqp_channel = await connection.channel(publisher_confirms=False)
        for queue in self.queues:
            try:
                declared = await amqp_channel.declare_queue(queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                # a missing queue closes the channel: open a new one at the next scrape
                log.warning("queue_stats.missing_queue", queue=queue)
                self._amqp_channel = None
                return
            result = declared.declaration_result
            QUEUE_MESSAGES.labels(queue).set(result.message_count or 0)
            QUEUE_CONSUMERS.labels(queue).set(result.consumer_count or 0)
            QUEUE_OLDEST_AGE.labels(queue).set(
                self.oldest_age(queue, result.message_count or 0, time.time())
            )

    async def close(self) -> None:
        if self._amqp_channel is not None and not self._amqp_channel.is_closed:
            await self._amqp_channel.close()
