"""What a message handler decides, and what it is given: the consumer's vocabulary.

A handler returns one :data:`Decision` per message; only :mod:`libs.messaging.consumer` acts on it
(acks, publishes to a delay queue or to ``failed.queue``). Pure data: no broker imports, so domain
code and the fast tests can use it without RabbitMQ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from libs.messaging import headers as H

M = TypeVar("M")

INVALID_MESSAGE = "invalid_message"
RETRIES_EXHAUSTED = "retries_exhausted"
PERMANENT_ERROR = "permanent_error"


@dataclass(frozen=True)
class Delivery(Generic[M]):
    """A decoded message and what the broker told us about it."""

    message: M
    message_id: str | None
    correlation_id: str | None
    headers: dict[str, Any]
    routing_key: str
    redelivered: bool
    priority: int

    @property
    def attempts(self) -> int:
        """Attempts that already failed before this delivery."""
        return int_header(self.headers, H.ATTEMPTS)

    @property
    def waits(self) -> int:
        return int_header(self.headers, H.WAITS)


def int_header(headers: dict[str, Any], name: str) -> int:
    try:
        return int(headers.get(name) or 0)
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True)
class Ack:
    """The work is done (sent, skipped, or already done by an earlier delivery)."""

    outcome: str = "done"


@dataclass(frozen=True)
class Retry:
    """A transient failure: try again later through a delay queue.

    ``not_before_ms`` asks for at least that much delay (a provider's Retry-After, a breaker's
    remaining open time). ``count_attempt=False`` parks the message without spending an attempt:
    no provider was called (the send claim is held by another consumer, or every provider's
    breaker is open).
    """

    error: str
    error_class: str = "TransientError"
    not_before_ms: int = 0
    count_attempt: bool = True
    provider: str | None = None
    """The provider that failed, when one was called (recorded as ``x-failure-provider``)."""


@dataclass(frozen=True)
class DeadLetter:
    """Give up now: the message goes to failed.queue with this reason."""

    reason: str
    error: str
    error_class: str = "PermanentError"
    provider: str | None = None


@dataclass(frozen=True)
class Requeue:
    """Give the message back to the broker as it is (nack with requeue), e.g. at shutdown."""

    reason: str = "requeued"


Decision = Ack | Retry | DeadLetter | Requeue
