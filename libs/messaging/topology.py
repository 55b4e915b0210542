"""The RabbitMQ topology of the contract, declared as data.

```
exchange notifications.direct (direct, durable)
  email -> email.queue   (durable, dead-letter exchange notifications.dlx)
  push  -> push.queue    (durable, dead-letter exchange notifications.dlx)
exchange notifications.dlx (durable)
  failed -> failed.queue (durable)
```

Retries wait in per-delay queues (``email.delay.1000`` ...) that hold no consumer: each message
carries its own (jittered) expiration, and when it expires the queue dead-letters it back to
``notifications.direct`` with the channel's routing key. Queues are named after their delay, so
changing the configured delays adds queues instead of redeclaring one with other arguments.

Declaring is idempotent: the same names with the same arguments, whoever starts first. This module
is pure data (no broker client); :func:`libs.messaging.connection.declare_topology` declares it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from libs.notification.message import PRIORITY_MAX, Channel

DIRECT_EXCHANGE = "notifications.direct"
DEAD_LETTER_EXCHANGE = "notifications.dlx"
FAILED_QUEUE = "failed.queue"
FAILED_ROUTING_KEY = "failed"
PARKED_QUEUE = "failed.parked"
"""Where dlq_service puts a failed message it cannot store (a deterministic error, after a few
tries): kept, never consumed automatically; an operator moves it back once the cause is fixed."""
PARKED_ROUTING_KEY = "parked"

QueueType = Literal["classic", "quorum"]


def work_queue(channel: Channel) -> str:
    return f"{channel.value}.queue"


def routing_key(channel: Channel) -> str:
    return channel.value


def delay_queue(channel: Channel, delay_ms: int) -> str:
    return f"{channel.value}.delay.{delay_ms}"


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    type: Literal["direct", "fanout", "topic", "headers"] = "direct"


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key)


@dataclass(frozen=True)
class Topology:
    exchanges: tuple[ExchangeSpec, ...]
    queues: tuple[QueueSpec, ...]

    def queue(self, name: str) -> QueueSpec:
        for spec in self.queues:
            if spec.name == name:
                return spec
        raise KeyError(name)


def _type_arguments(queue_type: QueueType) -> dict[str, Any]:
    if queue_type == "quorum":
        # at-least-once dead-lettering needs reject-publish overflow; a delivery limit stops a
        # message that crashes every consumer from looping forever.
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
    return {"x-queue-type": "classic"}


def build_topology(
    retry_delays_ms: dict[Channel, Sequence[int]],
    queue_type: QueueType = "classic",
    delivery_limit: int = 20,
) -> Topology:
    """The whole topology for the given retry delays (per channel) and queue type."""
    queues: list[QueueSpec] = []
    base = _type_arguments(queue_type)
    for channel in Channel:
        args: dict[str, Any] = {
            **base,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": FAILED_ROUTING_KEY,
        }
        if queue_type == "classic":
            args["x-max-priority"] = PRIORITY_MAX
        else:
            # Quorum queues (RabbitMQ >= 3.13) know two priorities: 0-4 normal, 5+ high.
            args["x-delivery-limit"] = delivery_limit
        queues.append(
            QueueSpec(work_queue(channel), args, ((DIRECT_EXCHANGE, routing_key(channel)),))
        )
        for delay in sorted(set(retry_delays_ms.get(channel, ()))):
            queues.append(
                QueueSpec(
                    delay_queue(channel, delay),
                    {
                        # Always quorum, whatever the work queues are: only a quorum queue
                        # dead-letters at least once (a classic one drops a message it cannot
                        # hand on), and every retry leaves its delay queue by dead-lettering.
                        **_type_arguments("quorum"),
                        "x-dead-letter-exchange": DIRECT_EXCHANGE,
                        "x-dead-letter-routing-key": routing_key(channel),
                    },
                )
            )
    queues.append(
        QueueSpec(FAILED_QUEUE, dict(base), ((DEAD_LETTER_EXCHANGE, FAILED_ROUTING_KEY),))
    )
    queues.append(
        QueueSpec(PARKED_QUEUE, dict(base), ((DEAD_LETTER_EXCHANGE, PARKED_ROUTING_KEY),))
    )
    return Topology(
        exchanges=(ExchangeSpec(DIRECT_EXCHANGE), ExchangeSpec(DEAD_LETTER_EXCHANGE)),
        queues=tuple(queues),
    )
