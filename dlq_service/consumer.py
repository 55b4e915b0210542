"""The failed.queue consumer: take any message, store it, then ack.

Nothing that reaches failed.queue is rejected (an unparseable body is exactly what it is for), so
the parser accepts any bytes. The ack comes only after the row is committed: a crash in between
redelivers the message, and the insert is idempotent. While the message cannot be stored (database
down) the handler keeps it unacked and retries; at shutdown it gives it back to the broker instead.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    wait_exponential,
)

from dlq_service.failures import IncomingFailure
from dlq_service.service import DlqService, StorageUnavailable
from libs.messaging.outcomes import Ack, Decision, Delivery, Requeue

log = structlog.get_logger(__name__)


def accept_any_body(body: bytes) -> bytes:
    """The QueueConsumer parser: every body is stored as it came."""
    return body


class StoreFailedMessage:
    """The QueueConsumer handler for failed.queue."""

    def __init__(
        self,
        dlq: DlqService,
        stopping: asyncio.Event,
        *,
        first_backoff: float = 0.2,
        max_backoff: float = 5.0,
    ) -> None:
        self._dlq = dlq
        self._stopping = stopping
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff

    async def __call__(self, delivery: Delivery[bytes]) -> Decision:
        incoming = IncomingFailure(
            body=delivery.message,
            message_id=delivery.message_id,
            correlation_id=delivery.correlation_id,
            headers=delivery.headers,
            priority=delivery.priority,
        )

        # Never dead-letter from here: that would send the message back to failed.queue (this
        # very queue) with its failure headers overwritten. Hold it and retry until stopping.
        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if not isinstance(error, StorageUnavailable):
                log.error("dlq.store_failed", message_id=delivery.message_id, error=repr(error))
            wait = state.next_action.sleep if state.next_action is not None else None
            log.warning(
                "dlq.store_retry", message_id=delivery.message_id, error=repr(error), retry_in=wait
            )

        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(Exception),
                stop=lambda _: self._stopping.is_set(),
                wait=wait_exponential(multiplier=self._first_backoff, max=self._max_backoff),
                sleep=self._sleep_unless_stopping,
                before_sleep=log_retry,
            ):
                with attempt:
                    inserted = await self._dlq.store(incoming)
        except RetryError:
            # Give it back untouched; another instance (or this one, restarted) stores it.
            log.warning("dlq.store_abandoned_at_shutdown", message_id=delivery.message_id)
            return Requeue("not_stored_at_shutdown")
        return Ack("stored" if inserted else "duplicate")

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
