"""Connecting to RabbitMQ: a robust connection (reconnects by itself) opened with retries."""

from __future__ import annotations

import asyncio

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from libs.messaging.publisher import ConfirmedPublisher
from libs.messaging.topology import Topology

log = structlog.get_logger(__name__)


async def connect(
    url: str, *, name: str, attempts: int = 30, delay: float = 1.0
) -> AbstractRobustConnection:
    """Open a robust connection, retrying while the broker is not reachable yet.

    Once open, aio-pika reconnects by itself and restores channels, exchanges and consumers.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await aio_pika.connect_robust(
                url,
                client_properties={"connection_name": name},
                reconnect_interval=1.0,
            )
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            if attempt == attempts:
                raise
            log.warning("amqp.connect_retry", attempt=attempt, error=repr(exc))
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def open_broker(
    url: str, *, name: str, topology: Topology, confirm_timeout: float = 5.0
) -> tuple[AbstractRobustConnection, ConfirmedPublisher]:
    """Connect, declare the whole topology (idempotent), and open a confirmed publisher."""
    connection = await connect(url, name=name)
    amqp_channel = await connection.channel()
    try:
        await declare_topology(amqp_channel, topology)
    finally:
        await amqp_channel.close()
    publisher = ConfirmedPublisher(connection, confirm_timeout=confirm_timeout)
    await publisher.open()
    return connection, publisher


async def declare_topology(amqp_channel: AbstractChannel, topology: Topology) -> None:
    """Declare every exchange, queue and binding; safe to run any number of times."""
    exchanges = {}
    for spec in topology.exchanges:
        exchanges[spec.name] = await amqp_channel.declare_exchange(
            spec.name, aio_pika.ExchangeType(spec.type), durable=True
        )
    for qspec in topology.queues:
        queue = await amqp_channel.declare_queue(
            qspec.name, durable=True, arguments=qspec.arguments
        )
        for exchange, key in qspec.bindings:
            await queue.bind(exchanges[exchange], routing_key=key)
