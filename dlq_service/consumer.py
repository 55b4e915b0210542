"""The failed.queue consumer: take any message, store it, then ack.

Nothing that reaches failed.queue is rejected (an unparseable body is exactly what it is for), so
the parser accepts any bytes. The ack comes only after the row is committed: a crash in between
redelivers the message, and the insert is idempotent. While the message cannot be stored (database
down) the handler keeps it unacked and retries; at shutdown it gives it back to the broker instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception_type,
    wait_exponential,
)

from dlq_service.failures import IncomingFailure
from dlq_service.service import StorageUnavailable
from libs.messaging.outcomes import Ack, DeadLetter, Decision, Delivery, Requeue

log = structlog.get_logger(__name__)


class FailureStore(Protocol):
    """``dlq_service.service.DlqService``: stores a failed message; False if already stored."""

    async def store(self, incoming: IncomingFailure) -> bool: ...


def accept_any_body(body: bytes) -> bytes:
    """The QueueConsumer parser: every body is stored as it came."""
    return body


UNSTORABLE = "unstorable"
"""Reason given to a failed message parked because storing it fails for reasons of its own."""


class StoreFailedMessage:
    """The QueueConsumer handler for failed.queue.

    While the database is unavailable, a message is held and retried (with backoff) until it is
    stored, or given back untouched at shutdown: an outage must not lose or divert anything.
    When storing fails for another reason (the row is refused: something about this message),
    it is tried ``park_after`` times, then parked in ``failed.parked`` with the error, instead of
    holding a consumer slot forever. (Never dead-lettered to failed.queue: that is this queue.)
    """

    def __init__(
        self,
        dlq: FailureStore,
        stopping: asyncio.Event,
        *,
        first_backoff: float = 0.2,
        max_backoff: float = 5.0,
        park_after: int = 3,
    ) -> None:
        self._dlq = dlq
        self._stopping = stopping
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._park_after = park_after

    async def __call__(self, delivery: Delivery[bytes]) -> Decision:
        incoming = IncomingFailure(
            body=delivery.message,
            message_id=delivery.message_id,
            correlation_id=delivery.correlation_id,
            headers=delivery.headers,
            priority=delivery.priority,
        )
        refusals = 0

        def give_up(state: RetryCallState) -> bool:
            nonlocal refusals
            error = state.outcome.exception() if state.outcome is not None else None
            if not isinstance(error, StorageUnavailable):
                refusals += 1
            return self._stopping.is_set() or refusals >= self._park_after

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
                stop=give_up,
                wait=wait_exponential(multiplier=self._first_backoff, max=self._max_backoff),
                sleep=self._sleep_unless_stopping,
                before_sleep=log_retry,
            ):
                with attempt:
                    inserted = await self._dlq.store(incoming)
        except RetryError as exc:
            if refusals >= self._park_after:
                error = exc.last_attempt.exception()
                log.error("dlq.parked", message_id=delivery.message_id, error=repr(error))
                return DeadLetter(UNSTORABLE, f"{type(error).__name__}: {error}", "Unstorable")
            # Give it back untouched; another instance (or this one, restarted) stores it.
            log.warning("dlq.store_abandoned_at_shutdown", message_id=delivery.message_id)
            return Requeue("not_stored_at_shutdown")
        return Ack("stored" if inserted else "duplicate")

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
