"""A publisher that returns only once the broker has confirmed the persistent message.

Every publish is mandatory (an unroutable message is an error, not a silent drop) and bounded by a
timeout, so callers can answer 503 instead of hanging while the broker is away. Many publishes may
be in flight on the one AMQP channel at once; each awaits its own confirm.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiormq.abc import ChannelFrame
from aiormq.exceptions import ChannelInvalidStateError

from libs.messaging.frames import field_table, publish_frames
from libs.metrics import MESSAGES_PUBLISHED, PUBLISH_FAILURES

log = structlog.get_logger(__name__)

# Broker-managed headers that must not be copied onto a message we publish again.
_BROKER_HEADERS = (
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
)


class Publisher(Protocol):
    """What code that publishes needs (:class:`ConfirmedPublisher`; in-memory in the fast tier)."""

    async def publish(
        self,
        *,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        correlation_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        priority: int = 0,
        expiration_ms: int | None = None,
    ) -> None:
        """Return once the broker confirmed the persistent message; raise PublishFailed."""
        ...


class BatchPublisher(Publisher, Protocol):
    """A publisher that also publishes many messages together (the gateway's intake)."""

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[PublishFailed | None]:
        """Publish together; per message, in order, None (confirmed) or why it was not."""
        ...


_PUBLISH_ERRORS = (
    TimeoutError,
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    RuntimeError,
)


class PublishFailed(Exception):
    """The broker did not confirm the message (nack, unroutable, timeout or connection lost)."""


def clean_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (headers or {}).items() if k not in _BROKER_HEADERS}


class ConfirmedPublisher:
    def __init__(self, connection: AbstractRobustConnection, *, confirm_timeout: float = 5.0):
        self._connection = connection
        self._timeout = confirm_timeout
        self._amqp_channel: AbstractChannel | None = None
        self._renewing = asyncio.Lock()

    async def open(self) -> None:
        self._amqp_channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )

    async def _renew_after_nack(self, nacked_on: AbstractChannel | None) -> None:
        """Replace the AMQP channel a publish was nacked on (once, however many were nacked).

        A nack means a queue did not take the message. A quorum queue whose leader went away
        while this channel was setting up as its publisher can go on nacking every publish on
        that channel (RabbitMQ 3.10, seen in tests/cluster/), while a new channel publishes fine.
        Nacks are otherwise rare (a full queue), so a fresh channel costs nothing.
        """
        async with self._renewing:
            if nacked_on is not self._amqp_channel or self._connection.is_closed:
                return  # already renewed by another nacked publish
            try:
                if nacked_on is not None and not nacked_on.is_closed:
                    await asyncio.wait_for(nacked_on.close(), self._timeout)
                await asyncio.wait_for(self.open(), self._timeout)
            except _PUBLISH_ERRORS as exc:  # best effort: the next nack tries again
                log.warning("amqp.publisher_channel_renew_failed", error=repr(exc))
                return
            log.warning("amqp.publisher_channel_renewed")

    async def close(self) -> None:
        if self._amqp_channel is not None and not self._amqp_channel.is_closed:
            await self._amqp_channel.close()

    @property
    def ready(self) -> bool:
        return (
            self._amqp_channel is not None
            and not self._amqp_channel.is_closed
            and not self._connection.is_closed
            and self._connection.connected.is_set()
        )

    async def publish(
        self,
        *,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        correlation_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        priority: int = 0,
        expiration_ms: int | None = None,
    ) -> None:
        """Publish one persistent JSON message and wait for the broker's confirm."""
        [failure] = await self.publish_many(
            [
                OutgoingMessage(
                    exchange,
                    routing_key,
                    body,
                    message_id,
                    correlation_id,
                    headers,
                    priority,
                    expiration_ms,
                )
            ]
        )
        if failure is not None:
            raise failure

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[PublishFailed | None]:
        """Publish persistent JSON messages together and wait for the broker's confirms: per
        message, in order, None (confirmed) or why not (nacked, returned as unroutable, or not
        confirmed in time; the channel lost fails every one).

        The frames of all of them are encoded here in one pass (:mod:`libs.messaging.frames`),
        registered with the aiormq channel's confirmations under its lock, and written to the
        connection as one piece. aiormq's own ``basic_publish`` does the same for one message
        through pamqp's generic encoders, a lock, two timeouts and a task per publish when many are
        gathered; a batch of 1,000 notifications spent 42 % of the gateway's CPU there. This relies
        on aiormq's channel internals (``lock``, ``delivery_tag``, ``confirmations``,
        ``message_id_delivery_tag``, ``write_queue``): aiormq is pinned to one minor version,
        ``tests/libs/test_aiormq_contract.py`` checks what is used, and
        ``tests/libs/test_messaging.py`` exercises it against RabbitMQ (confirms, returns, nacks,
        a lost channel). Once answered, a message's id is forgotten, so a late return of one that
        timed out finds nothing to fail.
        """
        if not messages:
            return []
        amqp_channel = self._amqp_channel
        sent: _Sent | None = None
        try:
            # (asyncio.timeout, not wait_for: under Python 3.11 wait_for runs its coroutine as a
            # task of its own)
            async with asyncio.timeout(self._timeout):
                if amqp_channel is None:
                    raise RuntimeError("publisher not opened")
                # (the aiormq channel itself: its abstract type does not declare its internals)
                channel = cast(aiormq.Channel, await amqp_channel.get_underlay_channel())
                sent = await _send(channel, messages)
                await asyncio.wait(sent.confirmations)
        except _PUBLISH_ERRORS as exc:
            if sent is None:  # nothing was sent: every one failed alike
                return await self._failed(messages, [exc] * len(messages), amqp_channel)
        finally:
            if sent is not None:
                outcomes = sent.release()
        if any(outcome is not None for outcome in outcomes):
            return await self._failed(messages, outcomes, amqp_channel)
        for message in messages:
            MESSAGES_PUBLISHED.labels(message.exchange or "(default)", message.routing_key).inc()
        return [None] * len(messages)

    async def _failed(
        self,
        messages: Sequence[OutgoingMessage],
        outcomes: Sequence[BaseException | None],
        amqp_channel: AbstractChannel | None,
    ) -> list[PublishFailed | None]:
        failures: list[PublishFailed | None] = []
        nacked = False
        for message, outcome in zip(messages, outcomes, strict=True):
            exchange = message.exchange or "(default)"
            if outcome is None:
                MESSAGES_PUBLISHED.labels(exchange, message.routing_key).inc()
                failures.append(None)
                continue
            PUBLISH_FAILURES.labels(exchange).inc()
            log.warning(
                "amqp.publish_failed",
                exchange=message.exchange,
                routing_key=message.routing_key,
                message_id=message.message_id,
                error=repr(outcome),
            )
            # a nack, not a return (an unroutable message): frames are named "Basic.Nack"
            if isinstance(outcome, aiormq.exceptions.DeliveryError) and (
                outcome.frame.name == "Basic.Nack"
            ):
                nacked = True
            failure = PublishFailed(f"{type(outcome).__name__}: {outcome}")
            failure.__cause__ = outcome
            failures.append(failure)
        if nacked:
            await self._renew_after_nack(amqp_channel)
        return failures


async def _send(channel: aiormq.Channel, messages: Sequence[OutgoingMessage]) -> _Sent:
    """Write the messages' frames as one piece; their confirmation futures, in order."""
    if not channel.publisher_confirms:
        raise RuntimeError("the publisher's channel has no publisher confirms")
    stamp = int(time.time())
    tables: dict[int, bytes | None] = {}
    frames: list[bytes] = []
    ids: list[str] = []
    for message in messages:
        headers = message.headers
        key = id(headers)
        if key not in tables:  # messages sharing one headers mapping encode it once
            tables[key] = field_table(clean_headers(headers)) if headers is not None else None
        message_id = message.message_id or uuid.uuid4().hex  # (a return is matched by it)
        ids.append(message_id)
        frames.append(
            publish_frames(
                channel=channel.number,
                max_body_frame=channel.max_content_size,
                exchange=message.exchange,
                routing_key=message.routing_key,
                mandatory=True,
                body=message.body,
                message_id=message_id,
                correlation_id=message.correlation_id,
                headers_table=tables[key],
                priority=message.priority,
                expiration=(
                    str(int(message.expiration_ms)) if message.expiration_ms is not None else None
                ),
                timestamp=stamp,
            )
        )
    payload = b"".join(frames)
    async with channel.lock:
        # The frames first: the broker numbers what it receives, so the tags are taken only
        # once they are on their way (nothing to give back if the wait for room is cancelled),
        # and no confirm can come before the futures below exist (no await in between).
        await channel.write_queue.put(ChannelFrame(payload=payload, should_close=False))
        first = channel.delivery_tag + 1
        channel.delivery_tag += len(ids)
        sent = _Sent(channel, first, ids)
        for tag, (message_id, confirmation) in enumerate(
            zip(ids, sent.confirmations, strict=True), start=first
        ):
            channel.confirmations[tag] = confirmation
            channel.message_id_delivery_tag[message_id] = tag
    return sent


class _Sent:
    """The confirmations of messages written together.

    They are plain futures of the event loop: aiormq's own (``channel.create_future()``) each
    carry two done callbacks and a place in two sets, to be failed when the channel closes, a
    tenth of a batch's CPU. One such future stands guard for the batch instead: when aiormq fails
    it (the channel or connection closed), every confirmation still open fails with it."""

    __slots__ = ("channel", "confirmations", "first", "guard", "ids")

    def __init__(self, channel: aiormq.Channel, first: int, ids: list[str]) -> None:
        loop = asyncio.get_running_loop()
        self.channel = channel
        self.first = first
        self.ids = ids
        self.confirmations: list[asyncio.Future[Any]] = [loop.create_future() for _ in ids]
        self.guard = channel.create_future()
        self.guard.add_done_callback(self._on_guard)

    def _on_guard(self, guard: asyncio.Future[Any]) -> None:
        if guard.cancelled() or guard.exception() is None:
            return  # released: all settled, or no longer waited for
        lost = ChannelInvalidStateError(f"the channel closed: {guard.exception()!r}")
        for confirmation in self.confirmations:
            if not confirmation.done():
                confirmation.set_exception(lost)

    def release(self) -> list[BaseException | None]:
        """Each message's outcome (None: confirmed); stop waiting for those still open (aiormq
        ignores a confirm for a cancelled future) and forget the message ids."""
        outcomes: list[BaseException | None] = []
        for confirmation in self.confirmations:
            if not confirmation.done():
                confirmation.cancel()
                outcomes.append(TimeoutError("no confirm in time"))
            elif confirmation.cancelled():
                outcomes.append(TimeoutError("no confirm in time"))
            else:
                outcomes.append(confirmation.exception())
        returns = self.channel.message_id_delivery_tag
        for tag, message_id in enumerate(self.ids, start=self.first):
            if returns.get(message_id) == tag:
                del returns[message_id]
        if not self.guard.done():
            self.guard.set_result(None)
        return outcomes


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One persistent JSON message for :meth:`ConfirmedPublisher.publish_many`."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    correlation_id: str | None = None
    headers: Mapping[str, Any] | None = None
    priority: int = 0
    expiration_ms: int | None = None
