"""Messages arriving on failed.queue are stored durably, once, and only then acked."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from aio_pika.abc import AbstractRobustConnection

from dlq_service.config import MIGRATIONS_DIR, DlqSettings
from dlq_service.repository import FailedFilter
from libs.messaging.topology import FAILED_QUEUE
from libs.metrics import MESSAGES_CONSUMED
from libs.notification.message import Channel
from libs.storage.db import upgrade
from tests.dlq_service.helpers import (
    Harness,
    eventually,
    failure_headers,
    incoming,
    notification,
    publish_failed,
    queue_depth,
    running,
    stored_count,
)
from tests.support.isolation import temp_database


def _consumed(outcome: str) -> float:
    return float(MESSAGES_CONSUMED.labels(FAILED_QUEUE, outcome)._value.get())


async def test_failed_message_is_stored_with_its_reason_attempts_headers_and_acked(
    dlq_settings: DlqSettings, amqp: AbstractRobustConnection, token_factory: Callable[..., str]
) -> None:
    message = notification(Channel.EMAIL)
    failed_at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    headers = failure_headers(
        reason="retries_exhausted",
        error="SMTPResponseException: 451 mailbox busy",
        attempts=3,
        failed_at=datetime.now(UTC),
        extra={
            "x-trace": "abc",
            "x-when": failed_at,
            "x-amount": Decimal("1.50"),
            "x-raw": bytearray(b"\xff\x00"),
        },
    )
    async with running(dlq_settings, token_factory("admin")) as dlq:
        await publish_failed(
            amqp,
            message.to_bytes(),
            headers,
            message_id=str(message.notification_id),
            correlation_id="corr-42",
            priority=7,
        )

        async def stored() -> bool:
            return await stored_count(dlq) == 1

        await eventually(stored)
        row = await dlq.only_row()
        detail = (await dlq.get(f"/api/v1/failed/{row['id']}")).json()["data"]

    assert detail["reason"] == "retries_exhausted"
    assert detail["error"] == "SMTPResponseException: 451 mailbox busy"
    assert detail["error_class"] == "SMTPResponseException"
    assert detail["service"] == "email_service"
    assert detail["attempts"] == 3
    assert detail["channel"] == "email"
    assert detail["state"] == "pending"
    assert detail["republishable"] is True
    assert detail["notification_id"] == str(message.notification_id)
    assert detail["request_id"] == message.request_id
    assert detail["user_id"] == str(message.user_id)
    assert detail["template_code"] == "welcome"
    assert detail["message_id"] == str(message.notification_id)
    assert detail["correlation_id"] == "corr-42"
    assert detail["priority"] == 7
    assert detail["body_encoding"] == "utf-8"
    assert detail["body"].encode() == message.to_bytes()
    assert detail["payload"]["notification_id"] == str(message.notification_id)
    # AMQP values became JSON: a timestamp, a decimal, bytes that are not UTF-8
    stored_headers = detail["headers"]
    assert stored_headers["x-trace"] == "abc"
    assert stored_headers["x-failure-reason"] == "retries_exhausted"
    assert datetime.fromisoformat(stored_headers["x-when"]) == failed_at
    assert stored_headers["x-amount"] == "1.50"
    assert stored_headers["x-raw"] == {"base64": base64.b64encode(b"\xff\x00").decode()}
    assert [(e["action"], e["actor"]) for e in detail["events"]] == [("received", "system")]
    # acked: after the consumer stopped (which requeues anything unacked) the queue is empty
    assert await queue_depth(amqp) == 0


async def test_non_json_body_is_stored_as_invalid_message_and_cannot_be_republished(
    dlq: Harness, amqp: AbstractRobustConnection
) -> None:
    headers = failure_headers(
        reason="invalid_message",
        error="ValidationError: Invalid JSON",
        error_class="InvalidMessage",
        attempts=0,
    )
    await publish_failed(amqp, b"\x00\x01 not json \xfe", headers, message_id="")

    async def stored() -> bool:
        return await stored_count(dlq) == 1

    await eventually(stored)
    row = await dlq.only_row()
    assert row["reason"] == "invalid_message"
    assert row["notification_id"] is None
    assert row["channel"] == "email"  # from x-original-routing-key
    assert row["republishable"] is False
    detail = (await dlq.get(f"/api/v1/failed/{row['id']}")).json()["data"]
    assert detail["body_encoding"] == "base64"
    assert base64.b64decode(detail["body"]) == b"\x00\x01 not json \xfe"
    assert detail["payload"] is None

    response = await dlq.post(f"/api/v1/failed/{row['id']}/republish")
    assert response.status_code == 409
    assert response.json()["error"] == "not_republishable"
    assert response.json()["success"] is False
    assert await queue_depth(amqp, "email.queue") == 0
    still = (await dlq.get(f"/api/v1/failed/{row['id']}")).json()["data"]
    assert still["state"] == "pending"
    assert [e["action"] for e in still["events"]] == ["received"]


async def test_duplicate_delivery_of_one_failure_stores_one_row(
    dlq: Harness, amqp: AbstractRobustConnection
) -> None:
    message = notification(Channel.PUSH)
    headers = failure_headers(reason="permanent_error", routing_key="push", service="push_service")
    duplicates_before = _consumed("duplicate")
    for _ in range(2):  # the same failure delivered twice (a crash between insert and ack)
        await publish_failed(
            amqp, message.to_bytes(), headers, message_id=str(message.notification_id)
        )

    async def both_consumed() -> bool:
        return _consumed("duplicate") >= duplicates_before + 1

    await eventually(both_consumed)
    assert await stored_count(dlq) == 1
    # the same message failing again later is a new failure: a second row
    again = {**headers, "x-failure-at": datetime.now(UTC).isoformat() + "1"}
    assert await dlq.service.store(incoming(message, again)) is True
    assert await dlq.service.store(incoming(message, again)) is False
    assert await stored_count(dlq) == 2
    assert await stored_count(dlq, notification_id=str(message.notification_id)) == 2


async def test_message_waits_unacked_while_the_database_cannot_store_it(
    settings_factory: Callable[..., DlqSettings],
    amqp: AbstractRobustConnection,
    token_factory: Callable[..., str],
) -> None:
    # The database exists but has no tables yet: every insert fails until the migration runs.
    async with temp_database("dlqempty") as empty_url:
        message = notification(Channel.EMAIL)
        settings = settings_factory(database_url=empty_url)
        async with running(settings, token_factory("admin")) as dlq:
            await publish_failed(
                amqp, message.to_bytes(), failure_headers(), message_id=str(message.notification_id)
            )

            async def held() -> bool:
                return bool(dlq.state.consumer.in_flight == 1)

            await eventually(held)
            await asyncio.sleep(0.5)
            # taken and held unacked: neither acked nor sent back to failed.queue
            assert dlq.state.consumer.in_flight == 1
            assert await queue_depth(amqp) == 0
            await asyncio.to_thread(upgrade, MIGRATIONS_DIR, empty_url)

            async def stored() -> bool:
                _, total = await dlq.service.search(FailedFilter(), offset=0, limit=10)
                return total == 1

            await eventually(stored, timeout=15)
            row = await dlq.only_row()
            assert row["notification_id"] == str(message.notification_id)
            assert row["reason"] == "retries_exhausted"
        assert await queue_depth(amqp) == 0


async def test_shutdown_gives_an_unstorable_message_back_to_the_queue(
    settings_factory: Callable[..., DlqSettings],
    amqp: AbstractRobustConnection,
    token_factory: Callable[..., str],
) -> None:
    message = notification(Channel.PUSH)
    async with temp_database("dlqempty") as empty_url:
        # no schema: the message cannot be stored while the app runs
        settings = settings_factory(database_url=empty_url)
        async with running(settings, token_factory("admin")) as dlq:
            await publish_failed(
                amqp, message.to_bytes(), failure_headers(), message_id=str(message.notification_id)
            )

            async def held() -> bool:
                return bool(dlq.state.consumer.in_flight == 1)

            await eventually(held)
            stopping_at = asyncio.get_running_loop().time()
        # the consumer's 30 s drain timeout was not waited out
        assert asyncio.get_running_loop().time() - stopping_at < 10
    assert await queue_depth(amqp) == 1  # back in failed.queue, untouched
    channel = await amqp.channel()
    try:
        queue = await channel.get_queue(FAILED_QUEUE)
        again = await queue.get(timeout=5)
        assert again.body == message.to_bytes()
        assert again.headers["x-failure-reason"] == "retries_exhausted"
        assert again.headers["x-failure-service"] == "email_service"
        await again.ack()
    finally:
        await channel.close()
