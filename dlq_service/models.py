"""Tables: ``failed_messages`` (one row per message taken from failed.queue) and its audit trail.

The schema changes only through the migrations in ``migrations/versions``; these classes mirror it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlmodel import Field, SQLModel


class FailedState(StrEnum):
    PENDING = "pending"
    REPUBLISHING = "republishing"
    """Claimed for a republish (committed before the publish): not republishable again until the
    outcome is recorded, so a database failure after the publish cannot lead to a second one."""
    REPUBLISHED = "republished"
    DISCARDED = "discarded"
    ARCHIVED = "archived"


class AuditAction(StrEnum):
    RECEIVED = "received"
    REPUBLISHED = "republished"
    DISCARDED = "discarded"
    ARCHIVED = "archived"


class BodyEncoding(StrEnum):
    UTF8 = "utf-8"
    BASE64 = "base64"


SYSTEM_ACTOR = "system"
# Who the audit trail names for republishes made by the automatic re-drive (dlq_service/redrive.py).
AUTO_REDRIVE_ACTOR = "system:auto-redrive"


class FailedMessage(SQLModel, table=True):
    __tablename__ = "failed_messages"
    __table_args__ = (
        CheckConstraint(
            "state IN ('pending', 'republishing', 'republished', 'discarded', 'archived')",
            name="ck_failed_messages_state",
        ),
        UniqueConstraint("fingerprint", name="uq_failed_messages_fingerprint"),
        Index("ix_failed_messages_state_failed_at", "state", "failed_at"),
        Index("ix_failed_messages_channel", "channel"),
        Index("ix_failed_messages_reason", "reason"),
        Index("ix_failed_messages_notification_id", "notification_id"),
        Index("ix_failed_messages_provider", "provider"),
        Index("ix_failed_messages_user_id", "user_id"),
        Index("ix_failed_messages_request_id", "request_id"),
        Index("ix_failed_messages_received_at", "received_at"),
    )

    id: uuid.UUID = Field(
        default_factory=uuid.uuid4, sa_column=Column(UUID(as_uuid=True), primary_key=True)
    )
    # sha256 of (message id, failure time, body): a redelivered copy maps to the same row.
    fingerprint: str = Field(sa_column=Column(String(64), nullable=False))
    message_id: str | None = Field(default=None, sa_column=Column(Text))
    notification_id: uuid.UUID | None = Field(default=None, sa_column=Column(UUID(as_uuid=True)))
    request_id: str | None = Field(default=None, sa_column=Column(Text))
    channel: str | None = Field(default=None, sa_column=Column(String(16)))
    user_id: str | None = Field(default=None, sa_column=Column(Text))
    template_code: str | None = Field(default=None, sa_column=Column(Text))
    reason: str = Field(sa_column=Column(String(64), nullable=False))
    error: str | None = Field(default=None, sa_column=Column(Text))
    error_class: str | None = Field(default=None, sa_column=Column(Text))
    service: str | None = Field(default=None, sa_column=Column(Text))
    # The provider whose failure it was (x-failure-provider); None when no provider was called.
    provider: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    headers: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSONB, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    body_encoding: str = Field(sa_column=Column(String(8), nullable=False))
    correlation_id: str | None = Field(default=None, sa_column=Column(Text))
    priority: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    # False when the message cannot go back to a work queue (unparseable, unknown channel).
    republishable: bool = Field(sa_column=Column(Boolean, nullable=False))
    failed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    state: str = Field(
        default=FailedState.PENDING.value, sa_column=Column(String(16), nullable=False)
    )
    republish_count: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    last_republished_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True))
    )


class FailedMessageEvent(SQLModel, table=True):
    __tablename__ = "failed_message_events"
    __table_args__ = (
        Index("ix_failed_message_events_failed_message_id", "failed_message_id", "at"),
        Index("ix_failed_message_events_actor", "actor"),
    )

    id: uuid.UUID = Field(
        default_factory=uuid.uuid4, sa_column=Column(UUID(as_uuid=True), primary_key=True)
    )
    failed_message_id: uuid.UUID = Field(
        sa_column=Column(
            UUID(as_uuid=True),
            ForeignKey("failed_messages.id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    action: str = Field(sa_column=Column(String(16), nullable=False))
    actor: str = Field(sa_column=Column(Text, nullable=False))
    reason: str | None = Field(default=None, sa_column=Column(Text))
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
