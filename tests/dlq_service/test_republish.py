"""Republishing puts the original message back on its work queue, confirmed, and audits it."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from dlq_service.config import DlqSettings
from libs.messaging import headers as H
from libs.notification.message import Channel, NotificationMessage
from libs.storage.status_store import RedisStatusStore
from tests.dlq_service.helpers import (
    ADMIN_SUB,
    Harness,
    failed_status,
    failure_headers,
    incoming,
    notification,
    queue_depth,
    running,
)
from tests.support.proxy import TcpProxy


async def _take(connection: AbstractRobustConnection, queue: str) -> AbstractIncomingMessage:
    channel = await connection.channel()
    q = await channel.get_queue(queue)
    message = await q.get(timeout=5)
    await message.ack()
    await channel.close()
    return message


async def _store(dlq: Harness, message: NotificationMessage, **headers: Any) -> str:
    assert await dlq.service.store(incoming(message, failure_headers(**headers))) is True
    response = await dlq.get(
        "/api/v1/failed/", params={"notification_id": str(message.notification_id)}
    )
    return str(response.json()["data"][0]["id"])


async def test_republish_puts_the_exact_body_on_the_work_queue_with_attempts_reset(
    dlq: Harness, amqp: AbstractRobustConnection, statuses: RedisStatusStore
) -> None:
    message = notification(Channel.EMAIL, priority=8)
    await failed_status(statuses, message)
    headers = failure_headers(attempts=3, extra={H.WAITS: 2, "x-trace": "t-1"})
    failure = incoming(message, headers, correlation_id="corr-77", priority=8)
    assert await dlq.service.store(failure)
    failed_id = (await dlq.only_row())["id"]

    response = await dlq.post(f"/api/v1/failed/{failed_id}/republish")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status_reset"] is True
    assert data["failed_message"]["state"] == "republished"
    assert data["failed_message"]["republish_count"] == 1

    assert await queue_depth(amqp, "email.queue") == 1
    assert await queue_depth(amqp, "push.queue") == 0
    sent = await _take(amqp, "email.queue")
    assert sent.body == message.to_bytes()  # byte for byte
    assert sent.message_id == str(message.notification_id)
    assert sent.correlation_id == "corr-77"
    assert sent.priority == 8
    assert sent.delivery_mode == 2  # persistent
    assert sent.headers[H.ATTEMPTS] == 0
    assert sent.headers[H.REPUBLISHED_COUNT] == 1
    assert sent.headers["x-trace"] == "t-1"
    for name in (*H.FAILURE_HEADERS, H.WAITS):
        assert name not in sent.headers, name

    detail = (await dlq.get(f"/api/v1/failed/{failed_id}")).json()["data"]
    assert detail["state"] == "republished"
    assert detail["republish_count"] == 1
    assert detail["last_republished_at"] is not None
    assert [(e["action"], e["actor"]) for e in detail["events"]] == [
        ("received", "system"),
        ("republished", ADMIN_SUB),
    ]
    status = await statuses.get(str(message.notification_id))
    assert status is not None
    assert status.status == "pending"
    assert status.timeline[-1].event == "republished"
    assert status.timeline[-1].service == "dlq_service"

    # republishing again counts up
    again = await dlq.post(f"/api/v1/failed/{failed_id}/republish")
    assert again.status_code == 200
    assert again.json()["data"]["failed_message"]["republish_count"] == 2
    assert again.json()["data"]["status_reset"] is False  # it was pending already
    second = await _take(amqp, "email.queue")
    assert second.headers[H.REPUBLISHED_COUNT] == 2


async def test_push_message_goes_back_to_the_push_queue(
    dlq: Harness, amqp: AbstractRobustConnection
) -> None:
    message = notification(Channel.PUSH)
    failed_id = await _store(dlq, message, routing_key="push", service="push_service")
    response = await dlq.post(f"/api/v1/failed/{failed_id}/republish")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status_reset"] is False  # no status known: nothing to reset
    assert await queue_depth(amqp, "push.queue") == 1
    assert await queue_depth(amqp, "email.queue") == 0


async def test_broker_unavailable_on_republish_gives_503_and_keeps_the_record_pending(
    dlq: Harness, amqp: AbstractRobustConnection, statuses: RedisStatusStore
) -> None:
    message = notification(Channel.EMAIL)
    await failed_status(statuses, message)
    failed_id = await _store(dlq, message)
    await dlq.state.publisher.close()  # the broker is gone for this app

    response = await dlq.post(f"/api/v1/failed/{failed_id}/republish")
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"] == "broker_unavailable"

    detail = (await dlq.get(f"/api/v1/failed/{failed_id}")).json()["data"]
    assert detail["state"] == "pending"
    assert detail["republish_count"] == 0
    assert [e["action"] for e in detail["events"]] == ["received"]
    status = await statuses.get(str(message.notification_id))
    assert status is not None
    assert status.status == "failed"  # not left claiming a retry that never happened
    assert await queue_depth(amqp, "email.queue") == 0

    bulk = await dlq.post("/api/v1/failed/republish", json={"filter": {}})
    assert bulk.status_code == 200
    assert bulk.json()["data"]["failed"] == 1
    assert bulk.json()["data"]["republished"] == 0
    ready = await dlq.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["data"]["checks"]["rabbitmq"]["status"] == "down"


@pytest.fixture
async def paced(
    settings_factory: Callable[..., DlqSettings], token_factory: Callable[..., str]
) -> AsyncIterator[Harness]:
    settings = settings_factory(republish_rate_per_second=10)
    async with running(settings, token_factory("admin", sub="admin-bob")) as harness:
        yield harness


async def test_bulk_republish_by_filter_respects_the_limit_and_the_pace(
    paced: Harness, amqp: AbstractRobustConnection
) -> None:
    base = datetime.now(UTC) - timedelta(hours=1)
    emails = [notification(Channel.EMAIL) for _ in range(7)]
    for n, message in enumerate(emails):
        await _store(paced, message, failed_at=base + timedelta(minutes=n))
    for _ in range(2):
        await _store(paced, notification(Channel.PUSH), routing_key="push")
    await paced.service.store(
        incoming(b"not json", failure_headers(reason="invalid_message", failed_at=base))
    )

    started = time.monotonic()
    response = await paced.post(
        "/api/v1/failed/republish", json={"filter": {"channel": "email"}, "limit": 5}
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    result = response.json()["data"]
    assert (result["matched"], result["republished"], result["skipped"], result["failed"]) == (
        5,
        5,
        0,
        0,
    )
    # 5 publishes at 10/s: 4 intervals of 0.1 s at least (bounded, not a benchmark)
    assert 0.38 <= elapsed < 8
    assert await queue_depth(amqp, "email.queue") == 5
    assert await queue_depth(amqp, "push.queue") == 0
    # the oldest failures went first; the unrepublishable invalid message was never picked
    oldest = {str(m.notification_id) for m in emails[:5]}
    republished = (
        await paced.get("/api/v1/failed/", params={"state": "republished", "limit": 100})
    ).json()["data"]
    assert {r["notification_id"] for r in republished} == oldest
    assert {r["id"] for r in republished} == set(result["republished_ids"])
    pending_email = (
        await paced.get("/api/v1/failed/", params={"channel": "email", "limit": 100})
    ).json()
    assert pending_email["meta"]["total"] == 3  # 2 emails + the invalid one
    detail = (await paced.get(f"/api/v1/failed/{republished[0]['id']}")).json()["data"]
    assert detail["events"][-1]["actor"] == "admin-bob"
    assert detail["events"][-1]["reason"] == "bulk"


async def test_bulk_republish_by_ids_skips_what_is_not_pending_or_republishable(
    dlq: Harness, amqp: AbstractRobustConnection
) -> None:
    keep = await _store(dlq, notification(Channel.PUSH), routing_key="push")
    gone = await _store(dlq, notification(Channel.EMAIL))
    await dlq.post(f"/api/v1/failed/{gone}/discard", json={"reason": "obsolete"})
    await dlq.service.store(incoming(b"\xff", failure_headers(reason="invalid_message")))
    invalid = (await dlq.get("/api/v1/failed/", params={"reason": "invalid_message"})).json()[
        "data"
    ][0]["id"]
    ids = [keep, gone, invalid, str(uuid.uuid4())]

    response = await dlq.post("/api/v1/failed/republish", json={"ids": ids})
    assert response.status_code == 200, response.text
    result = response.json()["data"]
    assert (result["matched"], result["republished"], result["skipped"], result["failed"]) == (
        1,
        1,
        3,
        0,
    )
    assert result["republished_ids"] == [keep]
    assert await queue_depth(amqp, "push.queue") == 1
    assert await queue_depth(amqp, "email.queue") == 0
    # a second run finds nothing pending among them
    second = (await dlq.post("/api/v1/failed/republish", json={"ids": ids})).json()["data"]
    assert (second["republished"], second["skipped"]) == (0, 4)


async def test_bulk_republish_validates_its_request(dlq: Harness) -> None:
    bodies: list[dict[str, Any]] = [
        {},
        {"limit": 5},
        {"filter": {}, "limit": 0},
        {"filter": {}, "limit": 1001},
        {"ids": []},
        {"ids": ["nope"]},
        {"filter": {"channel": "fax"}},
        {"filter": {"since": "soon"}},
        {"filter": {}, "extra": 1},
    ]
    for body in bodies:
        response = await dlq.post("/api/v1/failed/republish", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"] == "validation_error"


async def test_a_republish_whose_record_cannot_be_committed_is_not_republished_twice(
    settings_factory: Callable[..., DlqSettings],
    dlq_database_url: str,
    token_factory: Any,
    amqp: AbstractRobustConnection,
) -> None:
    """The broker confirmed the republish, then the database went away before the row said so:
    the row must not be pending again (a second republish would send the message twice)."""
    proxy = await TcpProxy("127.0.0.1", 5432).start()
    proxied = dlq_database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    settings = settings_factory(database_url=proxied)
    try:
        async with running(settings, token_factory("admin", sub=ADMIN_SUB)) as dlq:
            message = notification(Channel.EMAIL)
            failed_id = await _store(dlq, message)
            service = dlq.service
            real = service._publisher  # our own publisher interface, wrapped to time the fault

            class CutDatabaseAfterPublish:
                async def publish(self, **kwargs: Any) -> None:
                    await real.publish(**kwargs)
                    await proxy.cut()

            service._publisher = CutDatabaseAfterPublish()
            response = await dlq.post(f"/api/v1/failed/{failed_id}/republish")
            assert response.status_code == 200, response.text
            service._publisher = real
            await proxy.restore()

            detail = (await dlq.get(f"/api/v1/failed/{failed_id}")).json()["data"]
            assert detail["state"] == "republishing"  # claimed before the publish, never released
            again = await dlq.post(f"/api/v1/failed/{failed_id}/republish")
            assert again.status_code == 409
            bulk = await dlq.post("/api/v1/failed/republish", json={"filter": {}})
            assert bulk.json()["data"]["republished"] == 0
            assert await queue_depth(amqp, "email.queue") == 1
    finally:
        await proxy.close()
