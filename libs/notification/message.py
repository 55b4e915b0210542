"""The notification message: the JSON body of every message on ``email.queue`` and ``push.queue``.

One place per fact: channel names, priorities and the field patterns the gateway validates with are
defined here and nowhere else. (The HTTP response envelope is :mod:`libs.http.envelope`.)
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

PRIORITY_MIN, PRIORITY_MAX, PRIORITY_DEFAULT = 0, 10, 0
MAX_JSON_DEPTH = 32
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
TEMPLATE_CODE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{1,99}$"


class Channel(StrEnum):
    EMAIL = "email"
    PUSH = "push"


def utcnow() -> datetime:
    return datetime.now(UTC)


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse what the wire format (orjson) cannot carry: integers beyond 64 bits, nesting deeper
    than ``MAX_JSON_DEPTH``, NaN and infinities (which it would turn into null). Walked without
    recursion, so no input can exhaust the stack here."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
        elif isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
            raise ValueError("integers must fit in 64 bits")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError("numbers must be finite (JSON has no NaN or Infinity)")
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_json_safe)]
"""A JSON object the message can carry (``variables``, ``metadata``)."""


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
    variables: JsonObject = Field(default_factory=dict)
    language: str | None = Field(default=None, max_length=35, pattern=LANGUAGE_PATTERN)
    priority: int = Field(default=PRIORITY_DEFAULT, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    metadata: JsonObject = Field(default_factory=dict)
    created_at: datetime

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @staticmethod
    def encode(
        *,
        notification_id: UUID,
        request_id: str,
        notification_type: Channel,
        user_id: UUID,
        template_code: str,
        variables: dict[str, Any],
        language: str | None,
        priority: int,
        metadata: dict[str, Any] | None,
        created_at: datetime,
    ) -> bytes:
        """The body :meth:`to_bytes` writes for these (already validated) values, without
        building the model: the gateway writes one per accepted notification, and the model's
        construction and dump cost three times the encoding (byte for byte the same output:
        ``tests/unit/test_message_decoder.py``)."""
        return orjson.dumps(
            {
                "schema_version": 1,
                "notification_id": notification_id,
                "request_id": request_id,
                "notification_type": notification_type,
                "user_id": user_id,
                "template_code": template_code,
                "variables": variables,
                "language": language,
                "priority": priority,
                "metadata": metadata or {},
                "created_at": created_at,
            },
            option=orjson.OPT_UTC_Z,
        )

    @classmethod
    def from_bytes(cls, body: bytes) -> NotificationMessage:
        """Parse a message body; raises ``ValueError`` (or pydantic's subclass) when invalid."""
        return cls.model_validate_json(body)
