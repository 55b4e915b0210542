"""Finding a notification for the console: its status and timeline, by id or by request id.

The console reads statuses through :class:`NotificationHistory`, so the source can change (today
the Redis status store, which keeps a status for ``STATUS_RETENTION_SECONDS``) without touching
the pages, the CLI or the API. A request id is the caller's key, and only the gateway's durable
log indexes it (per caller): here it is looked up among the stored failures (indexed), which is
what an operator at the DLQ asks about. Finding any notification by request id across callers is
the gateway's to offer; this interface is where it would plug in.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from dlq_service.models import FailedMessage
from dlq_service.repository import FailedFilter
from dlq_service.service import DlqService
from libs.notification.status import StatusRecord
from libs.storage.status_store import RedisStatusStore


class NotificationHistory(Protocol):
    async def get(self, notification_id: str) -> StatusRecord | None: ...


class RedisNotificationHistory:
    """The status store (Redis): what the delivery services last recorded, with the timeline."""

    def __init__(self, statuses: RedisStatusStore) -> None:
        self._statuses = statuses

    async def get(self, notification_id: str) -> StatusRecord | None:
        return await self._statuses.get(notification_id)


@dataclass(frozen=True)
class Lookup:
    query: str
    notifications: list[StatusRecord]
    failed: list[FailedMessage]
    """Every stored failure of those notifications (any state), newest first."""


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


async def look_up(history: NotificationHistory, dlq: DlqService, query: str) -> Lookup:
    """By notification id first; otherwise by request id (the notifications with failures)."""
    query = query.strip()
    records: dict[str, StatusRecord] = {}
    nid = _as_uuid(query)
    if nid is not None:
        record = await history.get(str(nid))
        if record is not None:
            records[str(nid)] = record
    ids: set[uuid.UUID] = {nid} if nid is not None and records else set()
    if not records:
        for row in await dlq.with_request_id(query):
            if row.notification_id is not None:
                ids.add(row.notification_id)
                if str(row.notification_id) not in records:
                    found = await history.get(str(row.notification_id))
                    if found is not None:
                        records[str(row.notification_id)] = found
        if nid is not None:
            ids.add(nid)  # an id whose status expired may still have failures stored
    failed: list[FailedMessage] = []
    for ident in sorted(ids):
        rows, _ = await dlq.search(
            FailedFilter(notification_id=ident, state=None), offset=0, limit=50
        )
        failed.extend(rows)
    failed.sort(key=lambda r: r.failed_at, reverse=True)
    return Lookup(query=query, notifications=list(records.values()), failed=failed)
