"""The status store: transitions along allowed edges only, timeline, the history outbox."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from libs.notification.message import Channel
from libs.notification.status import NewNotification, Status
from libs.storage.status_store import RedisStatusStore


def _new(channel: Channel = Channel.EMAIL, user: str | None = None, minutes_ago: int = 0):
    return NewNotification(
        notification_id=str(uuid.uuid4()),
        request_id=f"req-{uuid.uuid4().hex[:8]}",
        channel=channel,
        user_id=user or str(uuid.uuid4()),
        template_code="welcome",
        priority=0,
        created_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
    )


@pytest.fixture
def store(redis, keys) -> RedisStatusStore:
    return RedisStatusStore(redis, keys, retention_seconds=3600)


async def test_create_is_pending_and_once(store):
    n = _new()
    assert await store.create(n) is True
    assert await store.create(n) is False
    record = await store.get(n.notification_id)
    assert record.status == "pending"
    assert record.attempts == 0
    assert [e.event for e in record.timeline] == ["accepted"]


async def test_many_are_created_in_one_script_each_as_alone(store, redis, keys):
    existing, fresh = _new(), [_new() for _ in range(3)]
    await store.create(existing)
    assert await store.create_many([fresh[0], existing, fresh[1], fresh[2]]) == [
        True,
        False,
        True,
        True,
    ]
    for n in fresh:
        record = await store.get(n.notification_id)
        assert (record.status, record.request_id) == ("pending", n.request_id)
        assert [e.event for e in record.timeline] == ["accepted"]
    # each creation is in the outbox once, with its snapshot
    entries = await redis.xrange(keys.history_stream())
    assert len(entries) == 4
    assert await store.create_many([]) == []


async def test_transitions_follow_allowed_edges_and_build_a_timeline(store):
    n = _new()
    await store.create(n)
    r = await store.transition(
        n.notification_id, Status.PROCESSING, event="processing", service="t", attempt=1
    )
    assert r.applied
    assert r.previous is Status.PENDING
    r = await store.transition(
        n.notification_id, Status.DELIVERED, event="delivered", service="t", provider="smtp"
    )
    assert r.applied
    # a late duplicate cannot move a delivered notification back
    late = await store.transition(
        n.notification_id, Status.PROCESSING, event="processing", service="t", attempt=1
    )
    assert not late.applied
    assert late.previous is Status.DELIVERED
    record = await store.get(n.notification_id)
    assert record.status == "delivered"
    assert record.provider == "smtp"
    assert record.attempts == 1
    assert record.finished_at
    assert [e.event for e in record.timeline] == ["accepted", "processing", "delivered"]


async def test_event_without_status_change_keeps_status(store):
    n = _new()
    await store.create(n)
    await store.transition(
        n.notification_id, None, event="attempt_failed", service="t", error="boom"
    )
    record = await store.get(n.notification_id)
    assert record.status == "pending"
    assert record.last_error == "boom"
    assert record.timeline[-1].error == "boom"


async def test_missing_notification_reports_missing(store):
    result = await store.transition(str(uuid.uuid4()), Status.PROCESSING, event="x", service="t")
    assert result.missing
    assert not result.applied


async def test_delete_forgets_everything_and_leaves_a_tombstone_for_the_history(store, redis, keys):
    n = _new()
    await store.create(n)
    await store.delete_many([n])
    assert await store.get(n.notification_id) is None
    assert (
        await redis.exists(keys.notification(n.notification_id), keys.timeline(n.notification_id))
        == 0
    )
    entries = await redis.xrange(keys.history_stream())
    assert [set(fields) for _, fields in entries] == [{b"s", b"e"}, {b"t"}]
    assert entries[-1][1][b"t"].decode() == n.notification_id


async def test_every_change_goes_to_the_history_stream_with_its_snapshot(store, redis, keys):
    n = _new()
    await store.create(n)
    await store.transition(n.notification_id, Status.PROCESSING, event="p", service="t", attempt=1)
    refused = await store.transition(n.notification_id, Status.PENDING, event="x", service="t")
    assert not refused.applied
    entries = await redis.xrange(keys.history_stream())
    snapshots = [orjson.loads(fields[b"s"]) for _, fields in entries]
    events = [orjson.loads(fields[b"e"])["event"] for _, fields in entries]
    assert events == ["accepted", "p"]  # a refused transition changes nothing, records nothing
    assert [s["status"] for s in snapshots] == ["pending", "processing"]
    assert snapshots[-1]["attempts"] == "1"


async def test_attempts_count_delivery_attempts_not_redeliveries(store):
    n = _new()
    await store.create(n)
    for attempt in (1, 1, 1, 2, 2, 1):  # parked and redelivered within attempts 1 and 2
        await store.transition(
            n.notification_id, Status.PROCESSING, event="processing", service="t", attempt=attempt
        )
    assert (await store.get(n.notification_id)).attempts == 2
