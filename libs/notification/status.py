"""The status machine of a notification: its states, the edges between them, and its records.

``pending -> processing -> delivered | failed | skipped``. A republished failure goes back to
``pending``; a provider's bounce moves ``delivered`` to ``failed``. Every edge is listed here and
nowhere else; the Redis status store enforces them atomically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from libs.notification.message import Channel


class Status(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNCONFIRMED = "unconfirmed"
    """Sent past the provider's point of no return, and no answer came: it may have arrived.
    Never sent again; a provider receipt may still settle it as delivered or failed."""


TERMINAL_STATUSES = frozenset({Status.DELIVERED, Status.FAILED, Status.SKIPPED, Status.UNCONFIRMED})


ALLOWED_FROM: dict[Status, frozenset[Status]] = {
    # republishing a failed notification makes it pending again
    Status.PENDING: frozenset({Status.PENDING, Status.FAILED}),
    Status.PROCESSING: frozenset({Status.PENDING, Status.PROCESSING}),
    Status.DELIVERED: frozenset({Status.PENDING, Status.PROCESSING}),
    Status.SKIPPED: frozenset({Status.PENDING, Status.PROCESSING}),
    Status.FAILED: frozenset({Status.PENDING, Status.PROCESSING}),
    Status.UNCONFIRMED: frozenset({Status.PENDING, Status.PROCESSING}),
}
"""Edges the delivery pipeline (and a republish, ``failed -> pending``) may take."""

BOUNCE_FROM = frozenset({Status.DELIVERED})
"""A provider's receipt may also say ``failed`` after ``delivered``: a bounce."""

SETTLED_BY_RECEIPT = frozenset({Status.UNCONFIRMED})
"""An unconfirmed notification is settled (delivered or failed) by the provider's receipt."""

UNDO_REPUBLISH_FROM = frozenset({Status.PENDING})
"""A republish whose publish was not confirmed puts ``pending`` back to ``failed``."""

FINISHED_STATUSES = TERMINAL_STATUSES
"""Moving to one of these stamps ``finished_at``."""


def receipt_allowed_from(to: Status) -> frozenset[Status]:
    """Edges a receipt (delivery report, bounce) may take to reach ``to``."""
    edges = ALLOWED_FROM[to]
    if to in (Status.DELIVERED, Status.FAILED):
        edges = edges | SETTLED_BY_RECEIPT
    return edges | BOUNCE_FROM if to is Status.FAILED else edges


def receipt_event(previous: Status, to: Status) -> str:
    """How the timeline names a receipt: a ``bounce`` when a delivered message failed after all."""
    return "bounce" if to is Status.FAILED and previous in BOUNCE_FROM else "receipt"


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


class TimelineEvent(BaseModel):
    """One entry of a notification's timeline; services may add details (``attempt``, ...)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    at: datetime
    event: str
    status: Status | None = None
    service: str | None = None
    provider: str | None = None
    error: str | None = None


class StatusRecord(BaseModel):
    """A notification's status: what the status store keeps, the gateway answers and the
    dead-letter service shows beside a failed message."""

    model_config = ConfigDict(frozen=True)

    notification_id: UUID
    request_id: str
    notification_type: Channel
    user_id: UUID
    template_code: str
    priority: int = 0
    language: str | None = None
    status: Status
    attempts: int = 0
    provider: str | None = None
    last_error: str | None = None
    owner: str | None = Field(default=None, exclude=True)
    """Who sent it (the caller's token subject); used for access checks, never shown."""
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    timeline: list[TimelineEvent] = Field(default_factory=list)


class StatusStore(Protocol):
    """Where statuses live (``libs.storage.status_store.RedisStatusStore``); domain code depends
    on this, so the fast tests pass an in-memory one."""

    async def create(self, n: NewNotification) -> bool:
        """Record a new notification as ``pending``; False if it already exists."""
        ...

    async def create_many(self, notifications: Sequence[NewNotification]) -> list[bool]:
        """:meth:`create` for each, at once; in order."""
        ...

    async def delete_many(self, notifications: Sequence[NewNotification]) -> None:
        """Forget notifications that were never accepted (their publish was not confirmed)."""
        ...

    async def transition(
        self,
        notification_id: str,
        to: Status | None,
        *,
        event: str,
        service: str,
        allowed_from: Iterable[Status] | None = None,
        attempt: int | None = None,
        provider: str | None = None,
        error: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> TransitionResult:
        """Move to ``to`` along an allowed edge (None: only record the event)."""
        ...

    async def get(self, notification_id: str) -> StatusRecord | None: ...
