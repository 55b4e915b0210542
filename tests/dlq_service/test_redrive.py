"""Automatic re-drive: only what can heal, only while the channel's breakers are closed, at most
N times per notification, audited as the system; off unless enabled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from dlq_service.config import DlqSettings
from dlq_service.models import AUTO_REDRIVE_ACTOR
from dlq_service.redrive import RedrivePolicy, redrive_once
from libs.messaging.topology import work_queue
from libs.notification.message import Channel, NotificationMessage
from libs.storage.redis import Keys
from tests.dlq_service.conftest import TokenFactory
from tests.dlq_service.helpers import (
    Harness,
    eventually,
    failure_headers,
    incoming,
    notification,
    queue_depth,
    running,
)

POLICY = RedrivePolicy(
    reasons=("retries_exhausted",), max_per_message=2, batch=100, interval_seconds=3600
)


async def _fail(dlq: Harness, message: NotificationMessage, reason: str, ago_s: int = 0) -> None:
    """One failure of ``message`` (a failure later than the last is a new row, as in real life)."""
    channel = message.notification_type.value
    headers = failure_headers(
        reason=reason,
        routing_key=channel,
        failed_at=datetime.now(UTC) - timedelta(seconds=ago_s),
    )
    assert await dlq.service.store(incoming(message, headers))


async def _actors(dlq: Harness, message: NotificationMessage) -> list[str]:
    rows = (
        await dlq.get(
            "/api/v1/failed/",
            params={"notification_id": str(message.notification_id), "state": "all"},
        )
    ).json()["data"]
    actors: list[str] = []
    for row in rows:
        detail = (await dlq.get(f"/api/v1/failed/{row['id']}")).json()["data"]
        actors += [e["actor"] for e in detail["events"] if e["action"] == "republished"]
    return actors


async def test_only_healable_reasons_on_channels_with_closed_breakers_are_redriven(
    dlq: Harness, redis: Redis, keys: Keys, amqp
) -> None:
    exhausted_email = notification(Channel.EMAIL)
    refused_email = notification(Channel.EMAIL)
    exhausted_push = notification(Channel.PUSH)
    await _fail(dlq, exhausted_email, "retries_exhausted")
    await _fail(dlq, refused_email, "permanent_error")
    await _fail(dlq, exhausted_push, "retries_exhausted")
    await redis.hset(keys.breaker("fcm"), mapping={"state": "open", "opened_at": 0})

    result = await redrive_once(dlq.service, dlq.state.probe, POLICY)

    email_row = await dlq.only_row(notification_id=str(exhausted_email.notification_id))
    assert [str(i) for i in result.republished_ids] == [email_row["id"]]
    assert await queue_depth(amqp, work_queue(Channel.EMAIL)) == 1
    assert await queue_depth(amqp, work_queue(Channel.PUSH)) == 0
    assert await _actors(dlq, exhausted_email) == [AUTO_REDRIVE_ACTOR]
    assert await _actors(dlq, refused_email) == []
    assert (await dlq.only_row(notification_id=str(exhausted_push.notification_id)))[
        "state"
    ] == "pending"

    # the push provider is back: its message goes on the next pass
    await redis.hset(keys.breaker("fcm"), mapping={"state": "closed"})
    again = await redrive_once(dlq.service, dlq.state.probe, POLICY)
    assert again.republished == 1
    assert await queue_depth(amqp, work_queue(Channel.PUSH)) == 1


async def test_a_half_open_breaker_holds_the_channel_back(
    dlq: Harness, redis: Redis, keys: Keys
) -> None:
    await _fail(dlq, notification(), "retries_exhausted")
    await redis.hset(keys.breaker("smtp"), mapping={"state": "half_open"})
    assert (await redrive_once(dlq.service, dlq.state.probe, POLICY)).matched == 0


async def test_a_notification_is_redriven_at_most_max_per_message_times_across_its_failures(
    dlq: Harness,
) -> None:
    message = notification()
    for attempt in range(3):
        # each automatic republish that fails again comes back as a new failure of it
        await _fail(dlq, message, "retries_exhausted", ago_s=100 - attempt)
        result = await redrive_once(dlq.service, dlq.state.probe, POLICY)
        assert result.republished == (1 if attempt < 2 else 0), attempt
    assert await _actors(dlq, message) == [AUTO_REDRIVE_ACTOR, AUTO_REDRIVE_ACTOR]
    # an operator can still republish it by hand
    last = (
        await dlq.get("/api/v1/failed/", params={"notification_id": str(message.notification_id)})
    ).json()["data"]
    assert len(last) == 1
    manual = await dlq.post(f"/api/v1/failed/{last[0]['id']}/republish")
    assert manual.status_code == 200, manual.text


async def test_the_service_redrives_by_itself_when_enabled(
    settings_factory: Callable[..., DlqSettings], token_factory: TokenFactory, amqp
) -> None:
    settings = settings_factory(auto_redrive_enabled=True, auto_redrive_interval_seconds=0.2)
    async with running(settings, token_factory("admin")) as harness:
        await _fail(harness, notification(), "retries_exhausted")

        async def republished() -> bool:
            return bool((await harness.only_row())["state"] == "republished")

        await eventually(republished, timeout=10, interval=0.1)
        assert await queue_depth(amqp, work_queue(Channel.EMAIL)) == 1


async def test_redrive_is_off_by_default(dlq_settings: DlqSettings, dlq: Harness, amqp) -> None:
    assert dlq_settings.auto_redrive_enabled is False
    await _fail(dlq, notification(), "retries_exhausted")
    await asyncio.sleep(0.5)
    assert (await dlq.only_row())["state"] == "pending"


@pytest.mark.unit
@pytest.mark.parametrize("reason", ["permanent_error", "invalid_message", "unknown"])
def test_reasons_that_cannot_heal_are_refused_in_the_settings(reason: str) -> None:
    with pytest.raises(ValidationError, match="cannot heal"):
        DlqSettings(auto_redrive_reasons=["retries_exhausted", reason])
