"""What an operator reads on /metrics moves with what happens: a delivered, a retried and a
dead-lettered push notification, read from the running processes' own /metrics."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.system import System

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
VARIABLES = {"name": "M", "count": 1, "link": "https://e.x", "image": "i"}


async def scrape(system: System, service: str) -> Samples:
    text = (await system.http.get(f"{system.url(service)}/metrics")).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


async def send_push(system: System, token: str) -> str:
    user = await system.register_user(push_token=token)
    response = await system.send(
        notification_type="push", user_id=user["id"], template_code="e2e_push", variables=VARIABLES
    )
    assert response.status_code == 202, response.text
    return str(response.json()["data"]["notification_id"])


async def wait_event(system: System, nid: str, event: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = await system.status(nid)
        if any(step["event"] == event for step in record["timeline"]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{nid} never recorded {event}")


async def test_delivered_retried_and_dead_lettered_notifications_move_their_series(system):
    push = await scrape(system, "push_service")
    gateway = await scrape(system, "gateway")
    dlq = await scrape(system, "dlq_service")

    delivered = await send_push(system, f"device-{uuid.uuid4().hex}")
    await system.wait_status(delivered, "delivered")

    system.fcm.mode = "unavailable"  # 503 with Retry-After: one attempt fails, then FCM is back
    try:
        retried = await send_push(system, f"device-{uuid.uuid4().hex}")
        await wait_event(system, retried, "attempt_failed")
    finally:
        system.fcm.mode = "ok"
    await system.wait_status(retried, "delivered")

    dead_lettered = await send_push(system, f"dead-{uuid.uuid4().hex}")
    await system.wait_status(dead_lettered, "failed")
    for _ in range(50):  # dlq_service stores it from failed.queue
        dlq_after = await scrape(system, "dlq_service")
        stored = dict(channel="push", reason="permanent_error")
        if moved(dlq, dlq_after, "dlq_failed_messages_received_total", **stored) >= 1:
            break
        await asyncio.sleep(0.1)

    push_after = await scrape(system, "push_service")
    gateway_after = await scrape(system, "gateway")
    fcm = {"provider": "fcm"}
    # sends per provider by outcome
    assert moved(push, push_after, "provider_sends_total", result="sent", **fcm) == 2
    assert moved(push, push_after, "provider_sends_total", result="transient_error", **fcm) == 1
    assert moved(push, push_after, "provider_sends_total", result="permanent_error", **fcm) == 1
    assert moved(push, push_after, "provider_send_duration_seconds_count", **fcm) == 4
    # accepted-to-delivered latency of the two delivered ones
    assert (
        moved(push, push_after, "notification_delivery_latency_seconds_count", channel="push") == 2
    )
    assert moved(push, push_after, "notification_delivery_latency_seconds_sum", channel="push") > 0
    assert moved(push, push_after, "notifications_total", channel="push", outcome="delivered") == 2
    assert moved(push, push_after, "notifications_total", channel="push", outcome="failed") == 1
    # retries and dead letters by reason
    retries = dict(queue="push.queue", reason="TransientProviderError")
    assert moved(push, push_after, "message_retries_total", **retries) == 1
    dead = dict(queue="push.queue", reason="permanent_error")
    assert moved(push, push_after, "messages_dead_lettered_total", **dead) == 1
    assert moved(dlq, dlq_after, "dlq_failed_messages_received_total", **stored) == 1
    # HTTP by route: three accepted sends
    accepted = dict(method="POST", route="/api/v1/notifications/", status="202")
    assert moved(gateway, gateway_after, "http_requests_total", **accepted) == 3
    # gauges read at the scrape from shared state: one failure does not open the breaker
    assert value(push_after, "circuit_breaker_state", **fcm) == 0
    assert value(push_after, "queue_consumers", queue="push.queue") >= 1
    assert value(push_after, "queue_messages", queue="push.queue") == 0
    assert value(push_after, "queue_oldest_message_age_seconds", queue="push.queue") == 0
    assert value(dlq_after, "queue_messages", queue="failed.queue") == 0
    heartbeat = value(push_after, "consumer_last_heartbeat_timestamp_seconds")
    assert time.time() - heartbeat < 10
    # caches: the users and renders this test fetched
    lookups = [key for key in push_after if key[0] == "cache_lookups_total"]
    assert {dict(labels)["result"] for _, labels in lookups} >= {"miss"}
