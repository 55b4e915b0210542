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
        backoff = self._first_backoff
        while True:
            try:
                inserted = await self._dlq.store(incoming)
            except Exception as exc:
                # Never dead-letter from here: that would send the message back to failed.queue
                # (this very queue) with its failure headers overwritten. Hold it and retry.
                if not isinstance(exc, StorageUnavailable):
                    log.exception("dlq.store_failed", message_id=delivery.message_id)
                if self._stopping.is_set():
                    # Give it back untouched; another instance (or this one, restarted) stores it.
                    log.warning("dlq.store_abandoned_at_shutdown", message_id=delivery.message_id)
                    return Requeue("not_stored_at_shutdown")
                log.warning(
                    "dlq.store_retry",
                    message_id=delivery.message_id,
                    error=repr(exc),
                    retry_in=backoff,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            return Ack("stored" if inserted else "duplicate")
