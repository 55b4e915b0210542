"""What the console and the CLI read besides the list: filters by provider and user, the republish
preview, the health of delivery, and the notification lookup."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from redis.asyncio import Redis

from libs.messaging import headers as H
from libs.messaging.topology import delay_queue, work_queue
from libs.notification.message import Channel
from libs.storage.redis import Keys
from libs.storage.status_store import RedisStatusStore
from tests.dlq_service.helpers import (
    Harness,
    failed_status,
    failure_headers,
    incoming,
    notification,
)

NOW = datetime.now(UTC).replace(microsecond=0)


async def test_failures_name_their_provider_and_filter_by_provider_and_user(dlq: Harness) -> None:
    user = uuid.uuid4()
    by_smtp = notification(user_id=user)
    by_backup = notification()
    assert await dlq.service.store(
        incoming(by_smtp, failure_headers(extra={H.FAILURE_PROVIDER: "smtp"}))
    )
    assert await dlq.service.store(
        incoming(by_backup, failure_headers(extra={H.FAILURE_PROVIDER: "smtp_backup"}))
    )
    smtp = await dlq.only_row(provider="smtp")
    assert smtp["notification_id"] == str(by_smtp.notification_id)
    assert smtp["provider"] == "smtp"
    assert (await dlq.only_row(user_id=str(user)))["id"] == smtp["id"]
    backup = await dlq.only_row(provider="smtp_backup")
    assert backup["notification_id"] == str(by_backup.notification_id)


async def test_preview_counts_what_a_bulk_republish_would_take_and_as_of_bounds_the_run(
    dlq: Harness,
) -> None:
    for _ in range(3):
        assert await dlq.service.store(incoming(notification()))
    assert await dlq.service.store(incoming(notification(), failure_headers(reason="x_other")))
    preview = await dlq.post(
        "/api/v1/failed/republish/preview", json={"filter": {"reason": "retries_exhausted"}}
    )
    assert preview.status_code == 200, preview.text
    data = preview.json()["data"]
    assert data["matching"] == 3
    # a message failing after the preview is left out when as_of bounds the run
    assert await dlq.service.store(incoming(notification()))
    run = await dlq.post(
        "/api/v1/failed/republish",
        json={"filter": {"reason": "retries_exhausted", "until": data["as_of"]}, "limit": 100},
    )
    assert run.json()["data"]["republished"] == 3
    left = await dlq.post("/api/v1/failed/republish/preview", json={"filter": {}})
    assert left.json()["data"]["matching"] == 2
    assert (await dlq.post("/api/v1/failed/republish/preview", json={})).status_code == 422


async def test_delivery_health_shows_breakers_queue_depths_and_arrivals(
    dlq: Harness, redis: Redis, keys: Keys, amqp: AbstractRobustConnection
) -> None:
    await redis.hset(
        keys.breaker("smtp"),
        mapping={"state": "open", "opened_at": int(NOW.timestamp() * 1000), "failures": 5},
    )
    channel = await amqp.channel()
    exchange = await channel.get_exchange("notifications.direct")
    for _ in range(2):
        await exchange.publish(aio_pika.Message(b"{}"), routing_key="push")
    await channel.close()
    assert await dlq.service.store(incoming(notification()))

    response = await dlq.get("/api/v1/delivery/health")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    breakers = {b["provider"]: b for b in data["breakers"]}
    assert breakers["smtp"]["state"] == "open"
    assert breakers["smtp"]["channel"] == "email"
    assert datetime.fromisoformat(breakers["smtp"]["opened_at"]) == NOW
    assert breakers["fcm"]["state"] == "closed"  # never used: no hash yet
    queues = {q["name"]: q for q in data["queues"]}
    assert queues[work_queue(Channel.PUSH)]["messages"] == 2
    assert queues[work_queue(Channel.EMAIL)]["messages"] == 0
    assert queues[delay_queue(Channel.EMAIL, 1000)]["kind"] == "retry"
    assert queues[delay_queue(Channel.EMAIL, 1000)]["channel"] == "email"
    assert queues["failed.parked"]["kind"] == "failed"
    assert len(data["arrivals"]) == 24
    assert data["arrivals"][-1]["count"] == 1
    assert sum(h["count"] for h in data["arrivals"]) == 1

    await redis.set(keys.breaker("fcm"), "not a hash")  # unreadable: reported, not a 500
    again = (await dlq.get("/api/v1/delivery/health")).json()["data"]
    assert {b["provider"]: b["state"] for b in again["breakers"]} == {
        "smtp": None,
        "fcm": None,
    }


async def test_lookup_finds_a_notification_by_id_or_request_id_with_its_failures(
    dlq: Harness, statuses: RedisStatusStore
) -> None:
    message = notification(request_id="order-42-welcome")
    await failed_status(statuses, message)
    assert await dlq.service.store(incoming(message))
    other = notification(request_id="order-43-welcome")
    await failed_status(statuses, other)

    for query in (str(message.notification_id), "order-42-welcome"):
        response = await dlq.get(f"/api/v1/lookup/{query}")
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert [n["notification_id"] for n in data["notifications"]] == [
            str(message.notification_id)
        ]
        assert data["notifications"][0]["status"] == "failed"
        assert [e["event"] for e in data["notifications"][0]["timeline"]] == [
            "accepted",
            "failed",
        ]
        assert [f["notification_id"] for f in data["failed_messages"]] == [
            str(message.notification_id)
        ]

    # a failure whose status expired is still found by its request id, from the DLQ
    gone = notification(request_id="order-44-welcome")
    assert await dlq.service.store(incoming(gone))
    data = (await dlq.get("/api/v1/lookup/order-44-welcome")).json()["data"]
    assert data["notifications"] == []
    assert [f["notification_id"] for f in data["failed_messages"]] == [str(gone.notification_id)]

    nothing = (await dlq.get("/api/v1/lookup/no-such-request")).json()["data"]
    assert nothing == {"query": "no-such-request", "notifications": [], "failed_messages": []}


async def test_operations_endpoints_are_for_admins_only(
    dlq: Harness, token_factory: Callable[..., str]
) -> None:
    service = token_factory("service")
    for path in ("/api/v1/delivery/health", "/api/v1/lookup/x"):
        assert (await dlq.client.get(path)).status_code == 401
        assert (await dlq.get(path, headers=dlq.auth(service))).status_code == 403
    preview = await dlq.post(
        "/api/v1/failed/republish/preview", json={"filter": {}}, headers=dlq.auth(service)
    )
    assert preview.status_code == 403
