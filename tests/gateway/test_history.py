"""The durable notification log: Redis outbox -> recorder -> PostgreSQL, and reads from it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.history import (
    Entry,
    HistoryEntry,
    HistoryRecorder,
    NotificationHistory,
    Tombstone,
    stream_version,
    write_batch,
)
from libs.notification.message import Channel
from libs.notification.status import NewNotification, Status
from libs.storage.db import create_engine
from libs.storage.status_store import RedisStatusStore
from tests.gateway.test_status_and_ops import _send, recorded
from tests.support.proxy import TcpProxy


def _new(channel: Channel = Channel.EMAIL, user: str | None = None, minutes_ago: int = 0):
    return NewNotification(
        notification_id=str(uuid.uuid4()),
        request_id=f"req-{uuid.uuid4().hex[:8]}",
        channel=channel,
        user_id=user or str(uuid.uuid4()),
        template_code="welcome",
        priority=0,
        created_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
        owner="svc",
    )


@pytest.fixture
async def engine(gateway_database_url):
    engine = create_engine(gateway_database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
def store(redis, keys) -> RedisStatusStore:
    return RedisStatusStore(redis, keys, retention_seconds=3600)


@pytest.fixture
def recorder(redis, keys, engine: AsyncEngine) -> HistoryRecorder:
    return HistoryRecorder(redis, engine, keys.history_stream(), consumer="test", block_ms=10)


async def drain(recorder: HistoryRecorder) -> None:
    while await recorder.record_once(block_ms=10):
        pass


async def recorded_as_redis_had_it(store, recorder, engine, notification_id: str):
    """The notification as the log holds it once recorded, checked equal to Redis's status."""
    await drain(recorder)
    hot = await store.get(notification_id)
    durable = await NotificationHistory(engine).get(notification_id)
    assert hot is not None
    assert durable is not None
    assert durable.model_dump() == hot.model_dump()
    return durable


async def _until(done: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    """Wait (at most ``seconds``) until ``done()``; the test's own assertions then say whether
    it came."""
    for _ in range(int(seconds / 0.05)):
        if await done():
            return
        await asyncio.sleep(0.05)


async def _drained(redis, keys) -> None:
    """Until the recorders have emptied the stream."""

    async def empty() -> bool:
        return bool(await redis.xlen(keys.history_stream()) == 0)

    await _until(empty)


async def _stream(redis, keys) -> list[Entry]:
    return [HistoryEntry.parse(i.decode(), f) for i, f in await redis.xrange(keys.history_stream())]


async def test_search_filters_and_paginates_newest_first(store, recorder, engine):
    user = str(uuid.uuid4())
    mine = [_new(Channel.EMAIL, user, minutes_ago=i) for i in range(5)]
    push = _new(Channel.PUSH, user)
    other = _new(Channel.EMAIL)
    for n in [*mine, push, other]:
        await store.create(n)
    await store.transition(mine[0].notification_id, Status.PROCESSING, event="p", service="t")
    await store.transition(mine[0].notification_id, Status.DELIVERED, event="d", service="t")
    await drain(recorder)
    history = NotificationHistory(engine)

    items, total = await history.search(user_id=user, channel=Channel.EMAIL, limit=2)
    assert total == 5
    assert [str(i.notification_id) for i in items] == [
        mine[0].notification_id,
        mine[1].notification_id,
    ]
    items, total = await history.search(user_id=user, channel=Channel.EMAIL, offset=4, limit=2)
    assert [str(i.notification_id) for i in items] == [mine[4].notification_id]

    delivered, total = await history.search(status=Status.DELIVERED, user_id=user)
    assert total == 1
    assert str(delivered[0].notification_id) == mine[0].notification_id
    _pending, total = await history.search(status=Status.PENDING, user_id=user)
    assert total == 5  # 4 email + 1 push
    _everything, total = await history.search()
    assert total == 7
    _theirs, total = await history.search(owner="someone-else")
    assert total == 0


async def test_the_log_holds_each_status_and_timeline_as_redis_had_it(store, recorder, engine):
    n = _new()
    await store.create(n)
    await store.transition(
        n.notification_id, Status.PROCESSING, event="processing", service="e", attempt=1
    )
    await store.transition(
        n.notification_id, Status.DELIVERED, event="delivered", service="e", provider="smtp"
    )
    durable = await recorded_as_redis_had_it(store, recorder, engine, n.notification_id)
    assert durable.owner == "svc"


async def test_the_log_keeps_text_as_it_was_and_empty_fields_empty(store, recorder, engine):
    n = NewNotification(
        notification_id=str(uuid.uuid4()),
        request_id="req «ü» \u2013 ✓",
        channel=Channel.PUSH,
        user_id=str(uuid.uuid4()),
        template_code="welcome",
        priority=7,
        created_at=datetime.now(UTC),
        language=None,
    )
    await store.create(n)
    await store.transition(
        n.notification_id,
        Status.FAILED,
        event="failed",
        service="push",
        error='550 «Mailbox» ünavailable: "quoted" \\ back\nslash',
        details={"nested": {"list": [1, "zwei", None]}, "emoji": "📮"},
    )
    durable = await recorded_as_redis_had_it(store, recorder, engine, n.notification_id)
    assert durable.language is None
    assert durable.owner is None
    assert durable.provider is None
    assert durable.priority == 7
    failed = durable.timeline[-1].model_dump()
    assert failed["error"] == '550 «Mailbox» ünavailable: "quoted" \\ back\nslash'
    assert failed["nested"] == {"list": [1, "zwei", None]}
    assert failed["emoji"] == "📮"


async def test_recording_is_idempotent_and_order_independent(store, redis, keys, engine):
    n = _new()
    await store.create(n)
    await store.transition(n.notification_id, Status.PROCESSING, event="p", service="t")
    await store.transition(n.notification_id, Status.DELIVERED, event="d", service="t")
    entries = await _stream(redis, keys)
    await write_batch(engine, entries[2:])  # the newest first
    await write_batch(engine, entries[:2])  # then older ones: they must not win
    await write_batch(engine, entries)  # and everything again (a redelivery): nothing doubles
    record = await NotificationHistory(engine).get(n.notification_id)
    assert record is not None
    assert record.status is Status.DELIVERED
    assert [e.event for e in record.timeline] == ["accepted", "p", "d"]


async def test_versions_are_the_stream_ids_as_python_reads_them(store, redis, keys, engine):
    """PostgreSQL turns stream ids into versions itself; tombstones are compared in Python by
    :func:`stream_version`: the two must agree, sequence numbers over 99,999 included."""
    n = _new()
    await store.create(n)
    [entry] = await _stream(redis, keys)
    assert isinstance(entry, HistoryEntry)
    ms = entry.stream_id.split("-")[0]
    for stream_id in (entry.stream_id, f"{ms}-123456"):
        moved = HistoryEntry(stream_id, entry.snapshot_json, entry.event_json)
        await write_batch(engine, [moved])
        async with engine.connect() as conn:
            row = await conn.exec_driver_sql(
                "SELECT version FROM notifications WHERE notification_id = $1::uuid",
                (n.notification_id,),
            )
            assert row.scalar_one() == stream_version(stream_id)


async def test_a_withdrawn_notification_leaves_nothing_but_a_retry_is_recorded(
    store, redis, keys, engine
):
    n = _new()
    await store.create(n)
    await store.delete_many([n])  # the broker did not confirm: never accepted
    first = await _stream(redis, keys)
    await store.create(n)  # the client's retry (the same notification id), confirmed this time
    retry = (await _stream(redis, keys))[len(first) :]
    assert isinstance(first[-1], Tombstone)
    history = NotificationHistory(engine)
    await write_batch(engine, first[:1])  # the create was recorded before the tombstone came
    assert await history.get(n.notification_id) is not None
    await write_batch(engine, first[1:])
    assert await history.get(n.notification_id) is None
    await write_batch(engine, first[:1])  # the old create arriving late changes nothing
    assert await history.get(n.notification_id) is None
    await write_batch(engine, retry)
    record = await history.get(n.notification_id)
    assert record is not None
    assert [e.event for e in record.timeline] == ["accepted"]


async def test_the_recorder_empties_the_stream_and_shares_it_with_others(
    store, redis, keys, engine
):
    a = HistoryRecorder(redis, engine, keys.history_stream(), consumer="a", block_ms=10, batch=7)
    b = HistoryRecorder(redis, engine, keys.history_stream(), consumer="b", block_ms=10, batch=7)
    created = [_new() for _ in range(40)]
    for n in created:
        await store.create(n)
    await a.start()
    await b.start()
    try:
        await _drained(redis, keys)
    finally:
        await a.stop()
        await b.stop()
    assert await redis.xlen(keys.history_stream()) == 0
    _, total = await NotificationHistory(engine).search(limit=1)
    assert total == 40


async def test_a_crashed_recorders_entries_are_taken_over(store, redis, keys, engine):
    n = _new()
    await store.create(n)
    crashed = HistoryRecorder(redis, engine, keys.history_stream(), consumer="crashed")
    await crashed._ensure_group()
    await crashed._read(">", block_ms=10)  # read, then died before writing and acknowledging
    survivor = HistoryRecorder(
        redis, engine, keys.history_stream(), consumer="survivor", block_ms=10, claim_idle_ms=0
    )
    assert await survivor.record_once(block_ms=10) == 1
    assert await NotificationHistory(engine).get(n.notification_id) is not None


async def test_a_batch_whose_write_failed_is_written_first_when_postgresql_is_back(
    store, redis, keys, gateway_database_url
):
    """The recorder reads its own unacknowledged entries again only after a failure: those are
    the ones a cut database left behind, and none is lost or waits for another consumer."""
    url = make_url(gateway_database_url)
    proxy = await TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    engine = create_engine(
        url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False),
        pool_size=1,
    )
    recorder = HistoryRecorder(redis, engine, keys.history_stream(), consumer="r", block_ms=10)
    try:
        first = [_new() for _ in range(3)]
        for n in first:
            await store.create(n)
        await proxy.cut()
        with pytest.raises((OSError, SQLAlchemyError)):
            await recorder.record_once(block_ms=10)
        await proxy.restore()
        later = _new()
        await store.create(later)
        assert await recorder.record_once(block_ms=10) == 3  # the failed batch, before anything new
        assert await recorder.record_once(block_ms=10) == 1
        assert await redis.xlen(keys.history_stream()) == 0
        history = NotificationHistory(engine)
        for n in [*first, later]:
            assert await history.get(n.notification_id) is not None
    finally:
        await engine.dispose()
        await proxy.close()


async def test_under_a_trickle_the_recorder_lingers_and_writes_larger_batches(
    store, redis, keys, engine
):
    recorder = HistoryRecorder(
        redis, engine, keys.history_stream(), consumer="r", block_ms=10, linger_ms=400
    )
    sizes: list[int] = []
    record_once = recorder.record_once

    async def counted(block_ms: int | None = None) -> int:
        sizes.append(await record_once(block_ms))
        return sizes[-1]

    recorder.record_once = counted  # type: ignore[method-assign]
    await recorder.start()
    started = time.monotonic()
    try:
        for _ in range(40):  # 40 notifications over about 1 s (longer on a busy machine)
            await store.create(_new())
            await asyncio.sleep(0.025)
        sending = time.monotonic() - started
        # wait for the recorder's own count, not for the stream to empty: the stream is empty as
        # soon as Redis runs the XDEL, a moment before record_once returns (stopping the recorder
        # in that moment cancels it with its last batch written but not yet counted)

        async def all_counted() -> bool:
            return sum(sizes) >= 40

        await _until(all_counted, seconds=10)
    finally:
        await recorder.stop()
    written = [n for n in sizes if n]
    assert sum(written) == 40
    # a batch per linger while they trickle in, and the last; without the linger: one small
    # batch per notification (40)
    assert len(written) <= sending / 0.4 + 2, (written, sending)


async def test_notifications_past_the_retention_are_purged(store, redis, keys, engine):
    old, recent = _new(minutes_ago=3 * 24 * 60), _new()
    for n in (old, recent):
        await store.create(n)
    recorder = HistoryRecorder(
        redis, engine, keys.history_stream(), consumer="r", block_ms=10, retention=timedelta(days=2)
    )
    await drain(recorder)
    await recorder._purge_if_due()
    history = NotificationHistory(engine)
    assert await history.get(old.notification_id) is None
    assert await history.get(recent.notification_id) is not None


async def test_statuses_and_timelines_survive_redis_losing_its_data(
    gateway, mint, redis, gateway_settings
):
    """Every key of the deployment deleted (as a Redis that lost its data): reads still answer,
    by notification id, by request id and in lists, with the same statuses and timelines."""
    headers = mint.headers("service", sub="svc")
    sent = [await _send(gateway, mint) for _ in range(5)]
    nid = sent[0]["notification_id"]
    report = {
        "notification_id": nid,
        "status": "delivered",
        "timestamp": datetime.now(UTC).isoformat(),
    }
    assert (
        await gateway.post("/api/v1/email/status/", json=report, headers=headers)
    ).status_code == 200
    await recorded(gateway, *sent)
    for _ in range(200):  # the receipt's entry, too
        logged = await gateway.state.history.get(nid)
        if logged is not None and "receipt" in [e.event for e in logged.timeline]:
            break
        await asyncio.sleep(0.025)
    before = {
        s["notification_id"]: (
            await gateway.get(f"/api/v1/notifications/{s['notification_id']}", headers=headers)
        ).json()["data"]
        for s in sent
    }
    async for key in redis.scan_iter(match=f"{gateway_settings.redis_key_prefix}*"):
        await redis.delete(key)

    for s in sent:
        by_id = await gateway.get(f"/api/v1/notifications/{s['notification_id']}", headers=headers)
        by_request = await gateway.get(f"/api/v1/notifications/{s['request_id']}", headers=headers)
        assert by_id.status_code == by_request.status_code == 200
        assert by_id.json()["data"] == before[s["notification_id"]]
        assert by_request.json()["data"] == before[s["notification_id"]]
    assert before[nid]["status"] == "delivered"
    assert [e["event"] for e in before[nid]["timeline"]] == ["accepted", "receipt"]
    listed = await gateway.get("/api/v1/notifications/", params={"limit": 10}, headers=headers)
    assert {n["notification_id"] for n in listed.json()["data"]} == set(before)
    assert {n["notification_id"]: n["status"] for n in listed.json()["data"]} == {
        k: v["status"] for k, v in before.items()
    }


async def test_redis_stays_flat_under_steady_load_while_the_log_keeps_everything(
    redis, keys, engine
):
    """Five simulated days of steady load, each day 1 s of retention: what Redis holds for the
    deployment stays the same size day after day (no index grows), and PostgreSQL has it all."""
    store = RedisStatusStore(redis, keys, retention_seconds=1)
    recorder = HistoryRecorder(redis, engine, keys.history_stream(), consumer="r", block_ms=10)
    per_day, sizes = 60, []
    for _day in range(5):
        for _ in range(per_day):
            n = _new()
            await store.create(n)
            await store.transition(n.notification_id, Status.PROCESSING, event="p", service="t")
            await store.transition(n.notification_id, Status.DELIVERED, event="d", service="t")
        await drain(recorder)
        await asyncio.sleep(1.2)  # the day is over: its records are past the retention
        sizes.append(len([k async for k in redis.scan_iter(match=f"{keys.prefix}*")]))
    assert max(sizes) <= 2  # nothing left but the (empty) history stream and its group
    assert await redis.xlen(keys.history_stream()) == 0
    _, total = await NotificationHistory(engine).search(limit=1)
    assert total == 5 * per_day
