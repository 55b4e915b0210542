"""Connecting to RabbitMQ: a robust connection (reconnects by itself) opened with retries."""

from __future__ import annotations

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_fixed,
)

from libs.messaging.publisher import ConfirmedPublisher
from libs.messaging.topology import Topology

log = structlog.get_logger(__name__)


async def connect(
    url: str, *, name: str, attempts: int = 30, delay: float = 1.0
) -> AbstractRobustConnection:
    """Open a robust connection, retrying while the broker is not reachable yet.

    Once open, aio-pika reconnects by itself and restores channels, exchanges and consumers.
    """
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_fixed(delay),
        retry=retry_if_exception_type((TimeoutError, OSError, aio_pika.exceptions.AMQPError)),
        before_sleep=_log_retry,
        reraise=True,
    ):
        with attempt:
            return await aio_pika.connect_robust(
                url,
                client_properties={"connection_name": name},
                reconnect_interval=1.0,
            )
    raise AssertionError("unreachable: tenacity re-raises the last error")


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("amqp.connect_retry", attempt=state.attempt_number, error=repr(error))


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
