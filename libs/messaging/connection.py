"""Connecting to RabbitMQ: a robust connection (reconnects by itself) opened with retries."""

from __future__ import annotations

import asyncio

import aio_pika
import structlog
from aio_pika.abc import AbstractRobustConnection

from libs.messaging.publisher import ConfirmedPublisher
from libs.messaging.topology import Topology, declare_topology

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
    channel = await connection.channel()
    try:
        await declare_topology(channel, topology)
    finally:
        await channel.close()
    publisher = ConfirmedPublisher(connection, confirm_timeout=confirm_timeout)
    await publisher.open()
    return connection, publisher
