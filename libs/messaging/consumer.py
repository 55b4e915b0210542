"""The consumer loop: manual ack, retries through delay queues, dead-lettering with a reason.

A handler decides what happens to each message by returning a :class:`Decision`; this module is the
only place that acks. The rule that makes the pipeline lossless: a message is acked only after the
work is done, or after its next home (a delay queue or ``failed.queue``) has confirmed it. If that
publish fails, the message is requeued, never dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from pydantic import ValidationError

from libs.logging import bind_correlation_id
from libs.messaging import headers as H
from libs.messaging.outcomes import (
    INVALID_MESSAGE,
    RETRIES_EXHAUSTED,
    Ack,
    DeadLetter,
    Decision,
    Delivery,
    Requeue,
    Retry,
    int_header,
)
from libs.messaging.policy import RetryPolicy
from libs.messaging.publisher import ConfirmedPublisher, PublishFailed
from libs.messaging.queue_stats import QueueStats
from libs.messaging.topology import DEAD_LETTER_EXCHANGE, FAILED_ROUTING_KEY
from libs.metrics import DEAD_LETTERS, MESSAGE_HANDLING, MESSAGES_CONSUMED, RETRIES, WAITS

log = structlog.get_logger(__name__)

M = TypeVar("M")

Parser = Callable[[bytes], M]
Handler = Callable[[Delivery[M]], Awaitable[Decision]]
DelayQueueName = Callable[[int], str]
FailureHook = Callable[[Delivery[M] | None, str, str], Awaitable[None]]


class QueueConsumer(Generic[M]):
    """Consume one queue with manual acks and settle each message by its handler's decision."""

    def __init__(
        self,
        *,
        connection: AbstractRobustConnection,
        publisher: ConfirmedPublisher,
        queue: str,
        parse: Parser[M],
        handler: Handler[M],
        service: str,
        prefetch: int = 50,
        retry_policy: RetryPolicy | None = None,
        delay_queue: DelayQueueName | None = None,
        on_dead_letter: FailureHook[M] | None = None,
        dead_letter_routing_key: str = FAILED_ROUTING_KEY,
        stats: QueueStats | None = None,
    ) -> None:
        """``dead_letter_routing_key``: where a DeadLetter goes on the dead-letter exchange
        (``failed.queue``; the failed.queue consumer itself parks in ``failed.parked``)."""
        self._connection = connection
        self._publisher = publisher
        self._queue_name = queue
        self._parse = parse
        self._handler = handler
        self._service = service
        self._prefetch = prefetch
        self._policy = retry_policy
        self._delay_queue = delay_queue
        self._on_dead_letter = on_dead_letter
        self._dead_letter_routing_key = dead_letter_routing_key
        self._stats = stats
        self._work: set[asyncio.Task[None]] = set()
        self._amqp_channel: AbstractChannel | None = None
        self._consumer_tag: str | None = None
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    @property
    def queue(self) -> str:
        return self._queue_name

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def consuming(self) -> bool:
        return (
            self._consumer_tag is not None
            and not self._stopping
            and self._amqp_channel is not None
            and not self._amqp_channel.is_closed
            and self._connection.connected.is_set()
        )

    async def start(self) -> None:
        self._amqp_channel = await self._connection.channel()
        await self._amqp_channel.set_qos(prefetch_count=self._prefetch)
        # A (passive) declare registers the queue with the robust AMQP channel, which then consumes
        # again by itself after a reconnect; get_queue(ensure=False) would not be restored.
        queue = await self._amqp_channel.declare_queue(self._queue_name, passive=True)
        self._consumer_tag = await queue.consume(self._on_message)
        log.info("consumer.started", queue=self._queue_name, prefetch=self._prefetch)

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking messages, let in-flight ones finish (up to ``timeout``), close the channel.

        Messages prefetched but not started are requeued by the broker when the AMQP channel closes.
        """
        self._stopping = True
        if self._amqp_channel is not None and not self._amqp_channel.is_closed:
            if self._consumer_tag is not None:
                try:
                    queue = await self._amqp_channel.declare_queue(self._queue_name, passive=True)
                    await asyncio.wait_for(queue.cancel(self._consumer_tag), 5)
                except (TimeoutError, aiormq.exceptions.AMQPError, RuntimeError) as exc:
                    log.warning("consumer.cancel_failed", error=repr(exc))
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except TimeoutError:
                log.warning("consumer.stop_timeout", in_flight=self._in_flight)
            await self._amqp_channel.close()
        log.info("consumer.stopped", queue=self._queue_name)

    async def _on_message(self, raw: AbstractIncomingMessage) -> None:
        if self._stopping:
            await _settle_quietly(raw.nack(requeue=True))
            return
        if self._stats is not None:
            self._stats.taken(self._queue_name, raw.headers or {}, raw.timestamp, raw.priority or 0)
        self._in_flight += 1
        self._idle.clear()
        # aiormq cancels a consumer's callbacks when their channel closes (the connection to the
        # node was lost). Work half-way must not stop there: a mail past the relay's point of no
        # return would give its send claim back and the redelivered copy would be sent again. So
        # the work runs in a task of its own, shielded: it finishes, its ack fails quietly on the
        # dead channel, and the broker's redelivery finds the claim sent.
        work = asyncio.create_task(self._handle(raw))
        self._work.add(work)
        work.add_done_callback(self._work.discard)
        await asyncio.shield(work)

    async def _handle(self, raw: AbstractIncomingMessage) -> None:
        started = time.perf_counter()
        try:
            bind_correlation_id(raw.correlation_id)
            outcome = await self._process(raw)
            MESSAGES_CONSUMED.labels(self._queue_name, outcome).inc()
        finally:
            MESSAGE_HANDLING.labels(self._queue_name).observe(time.perf_counter() - started)
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _process(self, raw: AbstractIncomingMessage) -> str:
        headers = dict(raw.headers or {})
        try:
            message = self._parse(raw.body)
        except (ValueError, ValidationError) as exc:
            await self._dead_letter(
                raw, None, headers, DeadLetter(INVALID_MESSAGE, _short(exc), "InvalidMessage")
            )
            return INVALID_MESSAGE
        delivery = Delivery(
            message=message,
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            headers=headers,
            routing_key=raw.routing_key or "",
            redelivered=bool(raw.redelivered),
            priority=raw.priority or 0,
        )
        try:
            decision = await self._handler(delivery)
        except Exception as exc:  # an unexpected bug must not lose the message: retry it
            log.exception("consumer.handler_error", message_id=raw.message_id)
            decision = Retry(error=_short(exc), error_class=type(exc).__name__)
        return await self._settle(raw, delivery, decision)

    async def _settle(
        self, raw: AbstractIncomingMessage, delivery: Delivery[M], decision: Decision
    ) -> str:
        if isinstance(decision, Ack):
            await _settle_quietly(raw.ack())
            return decision.outcome
        if isinstance(decision, Requeue):
            await _settle_quietly(raw.nack(requeue=True))
            return decision.reason
        if isinstance(decision, DeadLetter):
            await self._dead_letter(raw, delivery, delivery.headers, decision)
            return decision.reason
        return await self._retry(raw, delivery, decision)

    async def _retry(
        self, raw: AbstractIncomingMessage, delivery: Delivery[M], decision: Retry
    ) -> str:
        policy, delay_queue = self._policy, self._delay_queue
        exhausted = DeadLetter(
            RETRIES_EXHAUSTED, decision.error, decision.error_class, decision.provider
        )
        if policy is None or delay_queue is None:
            await self._dead_letter(raw, delivery, delivery.headers, exhausted)
            return RETRIES_EXHAUSTED
        headers = dict(delivery.headers)
        if decision.count_attempt:
            retry_number = delivery.attempts + 1
            if retry_number > policy.max_retries:
                await self._dead_letter(raw, delivery, headers, exhausted)
                return RETRIES_EXHAUSTED
            headers[H.ATTEMPTS] = retry_number
            queue_delay, expiration = policy.delay_for(retry_number, decision.not_before_ms)
        else:
            waits = delivery.waits + 1
            if waits > policy.max_waits:
                await self._dead_letter(raw, delivery, headers, exhausted)
                return RETRIES_EXHAUSTED
            headers[H.WAITS] = waits
            queue_delay, expiration = policy.wait_delay(decision.not_before_ms)
        headers[H.FAILURE_ERROR] = decision.error[:1000]
        headers[H.FAILURE_ERROR_CLASS] = decision.error_class
        if decision.provider:
            headers[H.FAILURE_PROVIDER] = decision.provider
        try:
            await self._publisher.publish(
                exchange="",
                routing_key=delay_queue(queue_delay),
                body=raw.body,
                message_id=raw.message_id or "",
                correlation_id=raw.correlation_id,
                headers=headers,
                priority=raw.priority or 0,
                expiration_ms=expiration,
            )
        except PublishFailed:
            await _settle_quietly(raw.nack(requeue=True))
            return "requeued"
        await _settle_quietly(raw.ack())
        (RETRIES if decision.count_attempt else WAITS).labels(
            self._queue_name, decision.error_class
        ).inc()
        log.info(
            "consumer.retry_scheduled",
            message_id=raw.message_id,
            attempt=headers.get(H.ATTEMPTS, 0),
            delay_ms=expiration,
            error=decision.error,
        )
        return "retry"

    async def _dead_letter(
        self,
        raw: AbstractIncomingMessage,
        delivery: Delivery[M] | None,
        headers: dict[str, Any],
        decision: DeadLetter,
    ) -> None:
        reason, error = decision.reason, decision.error
        failure = {
            **headers,
            H.FAILURE_REASON: reason,
            H.FAILURE_ERROR: error[:1000],
            H.FAILURE_ERROR_CLASS: decision.error_class,
            H.FAILURE_SERVICE: self._service,
            H.FAILURE_AT: datetime.now(UTC).isoformat(),
            H.ORIGINAL_ROUTING_KEY: raw.routing_key or "",
            H.ATTEMPTS: int_header(headers, H.ATTEMPTS),
        }
        if decision.provider:
            failure[H.FAILURE_PROVIDER] = decision.provider
        try:
            await self._publisher.publish(
                exchange=DEAD_LETTER_EXCHANGE,
                routing_key=self._dead_letter_routing_key,
                body=raw.body,
                message_id=raw.message_id or "",
                correlation_id=raw.correlation_id,
                headers=failure,
                priority=raw.priority or 0,
            )
        except PublishFailed:
            await _settle_quietly(raw.nack(requeue=True))
            return
        if self._on_dead_letter is not None:
            try:
                await self._on_dead_letter(delivery, reason, error)
            except Exception:  # the message is safe in failed.queue; a status write may lag
                log.exception("consumer.dead_letter_hook_failed", message_id=raw.message_id)
        await _settle_quietly(raw.ack())
        DEAD_LETTERS.labels(self._queue_name, reason).inc()
        log.warning("consumer.dead_lettered", message_id=raw.message_id, reason=reason, error=error)


async def _settle_quietly(settle: Awaitable[Any]) -> None:
    """Ack/nack; if the AMQP channel died meanwhile, the broker redelivers it: nothing lost."""
    try:
        await settle
    except (
        aiormq.exceptions.AMQPError,
        aiormq.exceptions.ChannelInvalidStateError,
        ConnectionError,
        RuntimeError,
    ) as exc:
        log.warning("consumer.settle_failed", error=repr(exc))


def _short(exc: BaseException, limit: int = 500) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
