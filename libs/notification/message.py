"""The notification message: the JSON body of every message on ``email.queue`` and ``push.queue``.

One place per fact: channel names, priorities and the field patterns the gateway validates with are
defined here and nowhere else. (The HTTP response envelope is :mod:`libs.http.envelope`.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

import orjson
from pydantic import BaseModel, ConfigDict, Field

PRIORITY_MIN, PRIORITY_MAX, PRIORITY_DEFAULT = 0, 10, 0
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
TEMPLATE_CODE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{1,99}$"


class Channel(StrEnum):
    EMAIL = "email"
    PUSH = "push"


def utcnow() -> datetime:
    return datetime.now(UTC)


class NotificationMessage(BaseModel):
    """The JSON body of every message on ``email.queue`` and ``push.queue``.

    Unknown fields are ignored so that an older consumer can read a newer producer's messages.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int = 1
    notification_id: UUID
    request_id: str = Field(min_length=1, max_length=128)
    notification_type: Channel
    user_id: UUID
    template_code: str = Field(min_length=1, max_length=100)
    variables: dict[str, Any] = Field(default_factory=dict)
    language: str | None = Field(default=None, max_length=35, pattern=LANGUAGE_PATTERN)
    priority: int = Field(default=PRIORITY_DEFAULT, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, body: bytes) -> NotificationMessage:
        """Parse a message body; raises ``ValueError`` (or pydantic's subclass) when invalid."""
        return cls.model_validate_json(body)
