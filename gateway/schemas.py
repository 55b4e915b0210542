"""Request and response bodies of the gateway (snake_case JSON)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from libs.notification.message import (
    LANGUAGE_PATTERN,
    PRIORITY_DEFAULT,
    PRIORITY_MAX,
    PRIORITY_MIN,
    TEMPLATE_CODE_PATTERN,
    Channel,
    JsonObject,
)
from libs.notification.status import Status

REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@/+=-]{0,127}$"


class NotificationRequest(BaseModel):
    """``POST /api/v1/notifications/``. Unknown fields are refused, so typos are not silent."""

    model_config = ConfigDict(extra="forbid")

    notification_type: Channel
    user_id: UUID
    template_code: str = Field(pattern=TEMPLATE_CODE_PATTERN)
    variables: JsonObject = Field(default_factory=dict)
    request_id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="The client's idempotency key: the same key and body are accepted once.",
    )
    priority: int = Field(
        default=PRIORITY_DEFAULT,
        ge=PRIORITY_MIN,
        le=PRIORITY_MAX,
        description="0 (normal) to 10 (most urgent); a higher priority overtakes a backlog.",
    )
    metadata: JsonObject | None = None
    language: str | None = Field(default=None, max_length=35, pattern=LANGUAGE_PATTERN)


class NotificationAccepted(BaseModel):
    notification_id: UUID
    request_id: str
    status: Status
    created_at: datetime


BATCH_MAX_ITEMS = 1000


class NotificationBatch(BaseModel):
    """``POST /api/v1/notifications/batch``: up to 1,000 notifications, each exactly what
    ``POST /api/v1/notifications/`` takes. Items are validated one by one (a bad item is refused
    in the answer; the others go on), so they are plain objects here."""

    model_config = ConfigDict(extra="forbid")

    notifications: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=BATCH_MAX_ITEMS,
        json_schema_extra={"items": {"$ref": "#/components/schemas/NotificationRequest"}},
    )


class ItemError(BaseModel):
    """Why one item of a batch was refused: the status and code a single request would get."""

    status: int
    code: str
    message: str
    details: Any = None


class BatchItem(BaseModel):
    """One item's answer, in the order of the request. ``accepted``: the broker confirmed it;
    ``replayed``: accepted earlier with this request_id and body; ``refused``: not queued (see
    ``error``; a 503-class error may be retried with the same request_id)."""

    index: int
    request_id: str | None
    outcome: Literal["accepted", "replayed", "refused"]
    notification_id: UUID | None = None
    status: Status | None = None
    created_at: datetime | None = None
    error: ItemError | None = None


class BatchAccepted(BaseModel):
    accepted: int
    replayed: int
    refused: int
    items: list[BatchItem]


class StatusReport(BaseModel):
    """``POST /api/v1/{notification_type}/status/``: a delivery service's or provider's report."""

    model_config = ConfigDict(extra="forbid")

    notification_id: UUID
    status: Status
    timestamp: datetime
    error: str | None = Field(default=None, max_length=2000)
    provider: str | None = Field(default=None, max_length=100)
