"""The status machine of a notification: its states, the edges between them, and its records.

``pending -> processing -> delivered | failed | skipped``. A republished failure goes back to
``pending``; a provider's bounce moves ``delivered`` to ``failed``. Every edge is listed here and
nowhere else; the Redis status store enforces them atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from libs.notification.message import Channel


class Status(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"


TERMINAL_STATUSES = frozenset({Status.DELIVERED, Status.FAILED, Status.SKIPPED})


ALLOWED_FROM: dict[Status, frozenset[Status]] = {
    # republishing a failed notification makes it pending again
    Status.PENDING: frozenset({Status.PENDING, Status.FAILED}),
    Status.PROCESSING: frozenset({Status.PENDING, Status.PROCESSING}),
    Status.DELIVERED: frozenset({Status.PENDING, Status.PROCESSING}),
    Status.SKIPPED: frozenset({Status.PENDING, Status.PROCESSING}),
    Status.FAILED: frozenset({Status.PENDING, Status.PROCESSING}),
}
"""Edges the delivery pipeline may take. Provider receipts may add ``delivered -> failed``."""


@dataclass(frozen=True)
class NewNotification:
    notification_id: str
    request_id: str
    channel: Channel
    user_id: str
    template_code: str
    priority: int
    created_at: datetime
    language: str | None = None
    owner: str = ""


@dataclass(frozen=True)
class TransitionResult:
    applied: bool
    previous: Status | None

    @property
    def missing(self) -> bool:
        return self.previous is None
