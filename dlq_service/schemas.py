"""Request and response bodies of the REST API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from dlq_service.delivery_health import QueueKind
from dlq_service.models import (
    BodyEncoding,
    FailedMessage,
    FailedMessageEvent,
    FailedState,
)
from dlq_service.notifications import Lookup
from dlq_service.repository import FailedFilter
from dlq_service.service import BulkResult, Stats
from libs.delivery.breaker import BreakerState
from libs.http.envelope import TEXT_PATTERN, Pagination
from libs.notification.message import Channel
from libs.notification.status import StatusRecord


def _as_utc(value: datetime | None) -> datetime | None:
    """Times without an offset are taken as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
StateFilter = Literal["pending", "republishing", "republished", "discarded", "archived", "all"]


class FailureFilter(BaseModel):
    """Which failed messages (every given field must match)."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel | None = None
    reason: str | None = Field(default=None, min_length=1, max_length=64, pattern=TEXT_PATTERN)
    error: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=TEXT_PATTERN,
        description="Case-insensitive substring",
    )
    since: UtcDatetime | None = Field(default=None, description="failed_at at or after (ISO 8601)")
    until: UtcDatetime | None = Field(default=None, description="failed_at at or before (ISO 8601)")
    provider: str | None = Field(
        default=None, min_length=1, max_length=64, description="The provider that failed"
    )
    user_id: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _ordered_range(self) -> Self:
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError("since must not be after until")
        return self

    def to_filter(
        self, state: FailedState | None, notification_id: uuid.UUID | None
    ) -> FailedFilter:
        return FailedFilter(
            channel=self.channel.value if self.channel else None,
            reason=self.reason,
            error=self.error,
            since=self.since,
            until=self.until,
            state=state,
            notification_id=notification_id,
            provider=self.provider,
            user_id=self.user_id,
        )


class FailedListQuery(Pagination, FailureFilter):
    """Query parameters of ``GET /api/v1/failed/``."""

    state: StateFilter = Field(default="pending", description="'all' for every state")
    notification_id: uuid.UUID | None = None

    def failed_filter(self) -> FailedFilter:
        state = None if self.state == "all" else FailedState(self.state)
        return self.to_filter(state, self.notification_id)


class FailedMessageSummary(BaseModel):
    id: uuid.UUID
    message_id: str | None
    notification_id: uuid.UUID | None
    request_id: str | None
    channel: str | None
    user_id: str | None
    template_code: str | None
    reason: str
    error: str | None
    error_class: str | None
    service: str | None
    provider: str | None
    attempts: int
    priority: int
    correlation_id: str | None
    state: FailedState
    republishable: bool
    republish_count: int
    failed_at: datetime
    received_at: datetime
    last_republished_at: datetime | None

    @classmethod
    def of(cls, row: FailedMessage) -> FailedMessageSummary:
        return cls.model_validate(row.model_dump())


class AuditEvent(BaseModel):
    action: str
    actor: str
    reason: str | None
    at: datetime

    @classmethod
    def of(cls, event: FailedMessageEvent) -> AuditEvent:
        return cls(action=event.action, actor=event.actor, reason=event.reason, at=event.at)


class FailedMessageDetail(FailedMessageSummary):
    headers: dict[str, Any]
    body: str
    body_encoding: BodyEncoding
    payload: Any = Field(default=None, description="The body parsed as JSON, when it is JSON")
    events: list[AuditEvent]

    @classmethod
    def with_events(
        cls, row: FailedMessage, events: list[FailedMessageEvent]
    ) -> FailedMessageDetail:
        payload = None
        if row.body_encoding == BodyEncoding.UTF8:
            try:
                payload = orjson.loads(row.body)
            except orjson.JSONDecodeError:
                payload = None
        return cls.model_validate(
            {**row.model_dump(), "payload": payload, "events": [AuditEvent.of(e) for e in events]}
        )


class RepublishOut(BaseModel):
    failed_message: FailedMessageSummary
    status_reset: bool = Field(description="The notification's status went from failed to pending")


class RepublishSelection(BaseModel):
    """Which pending messages: by id, by filter, or both."""

    model_config = ConfigDict(extra="forbid")

    ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=1000)
    filter: FailureFilter | None = None

    @model_validator(mode="after")
    def _something_chosen(self) -> Self:
        if self.ids is None and self.filter is None:
            raise ValueError("give ids, a filter, or both (an empty filter {} means every pending)")
        return self

    def failed_filter(self) -> FailedFilter:
        return self.filter.to_filter(None, None) if self.filter else FailedFilter()


class BulkRepublishRequest(RepublishSelection):
    limit: int = Field(default=100, ge=1, le=1000)


class RepublishPreviewOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    matching: int = Field(description="Pending, republishable messages the selection matches now")
    as_of: datetime = Field(
        description="Server time of the count: pass it as the filter's `until` so that messages "
        "failing after the preview stay out of the republish that follows"
    )


class BulkRepublishOut(BaseModel):
    matched: int
    republished: int
    skipped: int
    failed: int
    republished_ids: list[uuid.UUID]

    @classmethod
    def of(cls, result: BulkResult) -> BulkRepublishOut:
        return cls(
            matched=result.matched,
            republished=result.republished,
            skipped=result.skipped,
            failed=result.failed,
            republished_ids=result.republished_ids,
        )


class DiscardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=1, max_length=1000, pattern=TEXT_PATTERN
        ),
    ]


class PendingStats(BaseModel):
    total: int
    by_channel: dict[str, int]
    by_reason: dict[str, int]


class StatsOut(BaseModel):
    total: int
    by_state: dict[str, int]
    by_channel: dict[str, int]
    by_reason: dict[str, int]
    pending: PendingStats

    @classmethod
    def of(cls, stats: Stats) -> StatsOut:
        return cls(
            total=stats.total,
            by_state=stats.by_state,
            by_channel=stats.by_channel,
            by_reason=stats.by_reason,
            pending=PendingStats(
                total=sum(stats.pending_by_channel.values()),
                by_channel=stats.pending_by_channel,
                by_reason=stats.pending_by_reason,
            ),
        )


class BreakerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    provider: str
    channel: Channel
    state: BreakerState | None = Field(description="None when Redis could not be read")
    failures: int = Field(description="Recent failures counted while closed")
    opened_at: datetime | None


class QueueOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    kind: QueueKind
    channel: Channel | None
    messages: int | None = Field(description="Ready messages; None when it could not be read")
    consumers: int | None


class HourCount(BaseModel):
    hour: datetime
    count: int


class DeliveryHealthOut(BaseModel):
    breakers: list[BreakerOut]
    queues: list[QueueOut]
    arrivals: list[HourCount] = Field(description="Failed messages received per hour, last 24 h")


class LookupOut(BaseModel):
    query: str
    notifications: list[StatusRecord]
    failed_messages: list[FailedMessageSummary]

    @classmethod
    def of(cls, lookup: Lookup) -> LookupOut:
        return cls(
            query=lookup.query,
            notifications=lookup.notifications,
            failed_messages=[FailedMessageSummary.of(r) for r in lookup.failed],
        )
