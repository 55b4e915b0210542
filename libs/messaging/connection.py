"""Connecting to RabbitMQ: a robust connection (reconnects by itself) opened with retries.

``RABBITMQ_URL`` may name every node of a cluster, comma-separated
(``amqp://u:p@node-a:5672/vh,amqp://u:p@node-b:5672/vh``). The connection goes to the first node
that answers; when it is lost, or an attempt fails, the next attempt goes to the next node in the
list, so a client whose node stops moves to a surviving one by itself. aio-pika's robust connection
takes one URL (mosquito/aio-pika#141 is open); :class:`ClusterConnection` adds the list on its
documented ``connection_class`` extension point. Behind a load balancer or a Kubernetes Service
one URL is enough.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aio_pika.robust_connection import RobustConnection
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_fixed,
)
from yarl import URL

from libs.messaging.publisher import ConfirmedPublisher
from libs.messaging.topology import Topology

log = structlog.get_logger(__name__)


CONNECT_TIMEOUT_SECONDS = 10.0
_CONNECT_ERRORS = (TimeoutError, OSError, aio_pika.exceptions.AMQPError)


def broker_urls(url: str) -> list[URL]:
    """The nodes ``RABBITMQ_URL`` names, in order (one URL, or several comma-separated)."""
    urls = [URL(part.strip()) for part in url.split(",") if part.strip()]
    if not urls:
        raise ValueError("RABBITMQ_URL names no broker")
    return urls


def node_of(url: URL) -> str:
    """``host:port`` of a broker URL, for logs (never the credentials)."""
    return f"{url.host}:{url.port}"


class ClusterConnection(RobustConnection):
    """A robust connection that knows every node: each new attempt goes to the next node.

    aio-pika calls ``_on_connection_close`` both when an open connection is lost and when an
    attempt to open one fails (before it sleeps ``reconnect_interval`` and tries again), so moving
    to the next URL there is enough for the reconnect loop to walk the whole list.
    """

    def __init__(self, urls: Sequence[URL], *, first: int = 0, **kwargs: Any) -> None:
        self._urls = list(urls)
        self._current = first % len(self._urls)
        super().__init__(self._urls[self._current], **kwargs)
        self.reconnect_callbacks.add(self._log_reconnected)

    @property
    def node(self) -> str:
        return node_of(self.url)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not self._close_called:
            lost = self.node
            self._current = (self._current + 1) % len(self._urls)
            self.url = self._urls[self._current]
            if self.connected.is_set():
                log.warning("amqp.connection_lost", node=lost, next_node=self.node)
        await super()._on_connection_close(closing)

    def _log_reconnected(self, *_: Any) -> None:
        log.info("amqp.reconnected", node=self.node)


async def connect(
    url: str, *, name: str, attempts: int = 30, delay: float = 1.0
) -> ClusterConnection:
    """Open a robust connection to the first node that answers, retrying while none does.

    Once open, aio-pika reconnects by itself (to the next node, see :class:`ClusterConnection`)
    and restores channels, exchanges and consumers.
    """
    urls = broker_urls(url)
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_fixed(delay),
        retry=retry_if_exception_type(_CONNECT_ERRORS),
        before_sleep=_log_retry,
        reraise=True,
    ):
        with attempt:
            return await _first_node_that_answers(urls, name)
    raise AssertionError("unreachable: tenacity re-raises the last error")


async def _first_node_that_answers(urls: Sequence[URL], name: str) -> ClusterConnection:
    for index, url in enumerate(urls):
        connection = ClusterConnection(
            urls,
            first=index,
            client_properties={"connection_name": name},
            reconnect_interval=1.0,
        )
        try:
            await connection.connect(timeout=CONNECT_TIMEOUT_SECONDS)
        except _CONNECT_ERRORS:
            await connection.close()
            if index == len(urls) - 1:
                raise
            log.warning("amqp.node_unreachable", node=node_of(url))
            continue
        log.info("amqp.connected", node=connection.node)
        return connection
    raise AssertionError("unreachable: the last node re-raises")


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
