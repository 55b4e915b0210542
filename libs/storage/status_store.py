"""The status of every notification, in Redis: a hash per notification and its timeline.

Transitions are atomic (one Lua script): a status only moves along the allowed edges, so a late or
duplicate report (a redelivered message saying ``processing`` after ``delivered``) cannot rewrite
history. Every change appends to the notification's timeline and, in the same script, to the
history stream (the outbox the gateway's recorder moves into PostgreSQL: gateway/history.py).

Keys (see :class:`libs.storage.redis.Keys`): ``notif:<id>`` hash and ``notif:<id>:timeline`` list
of JSON events, both expiring after the retention; the ``history`` stream, emptied by the recorder
and capped in length. No index lives here: lists are read from PostgreSQL, so Redis memory stays
bounded by the retention whatever the load.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from libs.notification.status import (
    ALLOWED_FROM,
    FINISHED_STATUSES,
    NewNotification,
    Status,
    StatusRecord,
    TimelineEvent,
    TransitionResult,
)
from libs.storage.redis import Keys, lua_script

TIMELINE_LIMIT = 200

_CREATE = lua_script(__file__, "status_create.lua")
_TRANSITION = lua_script(__file__, "status_transition.lua")

HISTORY_MAX_ENTRIES = 1_000_000
"""The outbox is capped (approximately) at this many entries: Redis memory stays bounded even if
the recorder is down for long; past it the oldest unrecorded history would be dropped (an alert
watches the stream's length)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _snapshot(n: NewNotification) -> bytes:
    """A new notification's hash as one JSON object of strings: the script stores its fields and
    puts it in the history stream as it is (one argument a notification, not 28)."""
    created = n.created_at.isoformat()
    return orjson.dumps(
        {
            "notification_id": n.notification_id,
            "request_id": n.request_id,
            "notification_type": n.channel.value,
            "user_id": n.user_id,
            "template_code": n.template_code,
            "priority": str(n.priority),
            "language": n.language or "",
            "status": Status.PENDING.value,
            "attempts": "0",
            "provider": "",
            "last_error": "",
            "owner": n.owner,
            "created_at": created,
            "updated_at": created,
        }
    )


def _event(kind: str, status: str | None, **details: Any) -> bytes:
    entry = {"at": _now().isoformat(), "event": kind, "status": status}
    entry.update({k: v for k, v in details.items() if v is not None})
    return orjson.dumps(entry)


class RedisStatusStore:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        retention_seconds: int,
        history_max_entries: int = HISTORY_MAX_ENTRIES,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = retention_seconds
        self._history_max = history_max_entries
        self._create = redis.register_script(_CREATE)
        self._transition = redis.register_script(_TRANSITION)

    async def create(self, n: NewNotification) -> bool:
        """Record a new notification as ``pending``; False if it already exists."""
        [created] = await self.create_many([n])
        return created

    async def create_many(self, notifications: Sequence[NewNotification]) -> list[bool]:
        """Record each as ``pending`` (one script, one round trip); False where it existed."""
        if not notifications:
            return []
        keys = [self._keys.history_stream()]
        args: list[Any] = [self._ttl, self._history_max]
        for n in notifications:
            keys += [
                self._keys.notification(n.notification_id),
                self._keys.timeline(n.notification_id),
            ]
            args += [_event("accepted", Status.PENDING.value, service="gateway"), _snapshot(n)]
        created = await self._create(keys=keys, args=args)
        return [bool(c) for c in created]

    async def delete_many(self, notifications: Sequence[NewNotification]) -> None:
        """Forget notifications that were never accepted (their publish was not confirmed); the
        history gets a tombstone each, so the recorder removes what the create had recorded."""
        if not notifications:
            return
        pipe = self._redis.pipeline(transaction=True)
        for n in notifications:
            pipe.delete(
                self._keys.notification(n.notification_id), self._keys.timeline(n.notification_id)
            )
            pipe.xadd(
                self._keys.history_stream(),
                {"t": n.notification_id},
                maxlen=self._history_max,
                approximate=True,
            )
        await pipe.execute()

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
        """Move to ``to`` (None: keep the status and only record the event).

        Refused when the current status is not in ``allowed_from`` (default: the pipeline's edges).
        ``attempt`` is the delivery attempt this event belongs to (the count only grows, so a
        message parked and taken again within one attempt is not counted twice).
        """
        allowed = (
            ""
            if to is None
            else ",".join(
                s.value for s in (allowed_from if allowed_from is not None else ALLOWED_FROM[to])
            )
        )
        fields: dict[str, str] = {}
        if provider is not None:
            fields["provider"] = provider
        if error is not None:
            fields["last_error"] = error[:1000]
        if to in FINISHED_STATUSES:
            fields["finished_at"] = _now().isoformat()
        entry = _event(
            event,
            to.value if to is not None else None,
            service=service,
            provider=provider,
            error=error,
            **dict(details or {}),
        )
        flat = [x for kv in fields.items() for x in kv]
        result = await self._transition(
            keys=[
                self._keys.notification(notification_id),
                self._keys.timeline(notification_id),
                self._keys.history_stream(),
            ],
            args=[
                to.value if to is not None else "",
                allowed,
                _now().isoformat(),
                self._ttl,
                entry,
                attempt or 0,
                self._history_max,
                *flat,
            ],
        )
        verdict, previous = (x.decode() if isinstance(x, bytes) else str(x) for x in result)
        return TransitionResult(
            applied=verdict == "ok", previous=Status(previous) if previous else None
        )

    async def get_many(self, notification_ids: list[str]) -> dict[str, StatusRecord]:
        """The records Redis still has, by id (without timelines), in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for nid in notification_ids:
            pipe.hgetall(self._keys.notification(nid))
        rows = await pipe.execute()
        return {
            nid: _decode_record(row) for nid, row in zip(notification_ids, rows, strict=True) if row
        }

    async def get(self, notification_id: str) -> StatusRecord | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._keys.notification(notification_id))
        pipe.lrange(self._keys.timeline(notification_id), 0, -1)
        raw, timeline = await pipe.execute()
        if not raw:
            return None
        return _decode_record(raw, [TimelineEvent.model_validate_json(e) for e in timeline])


def _decode_record(
    raw: Mapping[bytes, bytes], timeline: list[TimelineEvent] | None = None
) -> StatusRecord:
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    fields.pop("created_ts", None)  # written by earlier versions
    return StatusRecord(
        notification_id=fields["notification_id"],
        request_id=fields["request_id"],
        notification_type=fields["notification_type"],
        user_id=fields["user_id"],
        template_code=fields["template_code"],
        priority=int(fields.get("priority") or 0),
        language=fields.get("language") or None,
        status=fields["status"],
        attempts=int(fields.get("attempts") or 0),
        provider=fields.get("provider") or None,
        last_error=fields.get("last_error") or None,
        owner=fields.get("owner") or None,
        created_at=fields["created_at"],
        updated_at=fields.get("updated_at") or fields["created_at"],
        finished_at=fields.get("finished_at") or None,
        timeline=timeline or [],
    )
