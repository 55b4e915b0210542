"""Listing, inspecting, discarding, stats, readiness and archival over the REST API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from dlq_service.config import DlqSettings
from libs.notification.message import Channel, NotificationMessage
from tests.dlq_service.helpers import (
    ADMIN_SUB,
    Harness,
    eventually,
    failure_headers,
    incoming,
    notification,
    running,
)

NOW = datetime.now(UTC).replace(microsecond=0)


async def _seed(dlq: Harness) -> dict[str, Any]:
    """Five failures, one hour apart (A oldest ... E newest)."""
    messages: dict[str, tuple[NotificationMessage | bytes, dict[str, Any]]] = {
        "A": (
            notification(Channel.EMAIL),
            failure_headers(error="SMTP 451 Mailbox busy", failed_at=NOW - timedelta(hours=5)),
        ),
        "B": (
            notification(Channel.EMAIL),
            failure_headers(
                reason="permanent_error",
                error="SMTP 550 no such user",
                failed_at=NOW - timedelta(hours=4),
            ),
        ),
        "C": (
            notification(Channel.PUSH),
            failure_headers(
                error="FCM unavailable",
                routing_key="push",
                service="push_service",
                failed_at=NOW - timedelta(hours=3),
            ),
        ),
        "D": (
            b"{broken json",
            failure_headers(
                reason="invalid_message",
                error="ValidationError: Invalid JSON",
                routing_key="push",
                service="push_service",
                failed_at=NOW - timedelta(hours=2),
            ),
        ),
        "E": (
            notification(Channel.EMAIL),
            failure_headers(error="smtp TIMEOUT", failed_at=NOW - timedelta(hours=1)),
        ),
    }
    for body, headers in messages.values():
        assert await dlq.service.store(incoming(body, headers)) is True
    rows = (await dlq.get("/api/v1/failed/", params={"limit": 100})).json()["data"]
    by_error = {r["error"]: r for r in rows}
    return {name: by_error[headers["x-failure-error"]] for name, (_, headers) in messages.items()}


async def _names(dlq: Harness, seeded: dict[str, Any], **params: Any) -> list[str]:
    response = await dlq.get("/api/v1/failed/", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    ids = {row["id"]: name for name, row in seeded.items()}
    return [ids[row["id"]] for row in body["data"]]


async def test_list_is_newest_first_and_filters_by_channel_reason_error_time_and_id(
    dlq: Harness,
) -> None:
    seeded = await _seed(dlq)
    assert await _names(dlq, seeded) == ["E", "D", "C", "B", "A"]
    assert await _names(dlq, seeded, channel="email") == ["E", "B", "A"]
    assert await _names(dlq, seeded, channel="push") == ["D", "C"]
    assert await _names(dlq, seeded, reason="retries_exhausted") == ["E", "C", "A"]
    assert await _names(dlq, seeded, reason="invalid_message") == ["D"]
    assert await _names(dlq, seeded, error="smtp") == ["E", "B", "A"]  # case-insensitive
    assert await _names(dlq, seeded, error="451") == ["A"]
    assert await _names(dlq, seeded, error="100%") == []  # LIKE wildcards are literal
    assert await _names(
        dlq,
        seeded,
        since=(NOW - timedelta(hours=4, minutes=30)).isoformat(),
        until=(NOW - timedelta(hours=1, minutes=30)).isoformat(),
    ) == ["D", "C", "B"]
    # a time without offset is UTC
    naive = (NOW - timedelta(hours=2, minutes=30)).replace(tzinfo=None).isoformat()
    assert await _names(dlq, seeded, since=naive) == ["E", "D"]
    assert await _names(dlq, seeded, notification_id=seeded["C"]["notification_id"]) == ["C"]
    assert await _names(dlq, seeded, channel="email", reason="permanent_error") == ["B"]


async def test_list_paginates_with_meta(dlq: Harness) -> None:
    seeded = await _seed(dlq)
    response = await dlq.get("/api/v1/failed/", params={"limit": 2, "page": 2})
    body = response.json()
    assert [r["id"] for r in body["data"]] == [seeded["C"]["id"], seeded["B"]["id"]]
    assert body["meta"] == {
        "total": 5,
        "limit": 2,
        "page": 2,
        "total_pages": 3,
        "has_next": True,
        "has_previous": True,
    }
    last = (await dlq.get("/api/v1/failed/", params={"limit": 2, "page": 3})).json()
    assert [r["id"] for r in last["data"]] == [seeded["A"]["id"]]
    assert last["meta"]["has_next"] is False
    beyond = (await dlq.get("/api/v1/failed/", params={"limit": 2, "page": 9})).json()
    assert beyond["data"] == []
    assert beyond["meta"]["total"] == 5


async def test_bad_list_parameters_are_422_envelopes(dlq: Harness) -> None:
    for params in (
        {"limit": 0},
        {"limit": 101},
        {"page": 0},
        {"since": "yesterday"},
        {"channel": "sms"},
        {"state": "lost"},
        {"notification_id": "nope"},
        {"since": NOW.isoformat(), "until": (NOW - timedelta(days=1)).isoformat()},
        {"colour": "red"},
    ):
        response = await dlq.get("/api/v1/failed/", params=params)
        assert response.status_code == 422, (params, response.text)
        body = response.json()
        assert body["success"] is False
        assert body["error"] == "validation_error"


async def test_one_message_not_found_and_bad_id(dlq: Harness) -> None:
    missing = await dlq.get(f"/api/v1/failed/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    bad = await dlq.get("/api/v1/failed/not-a-uuid")
    assert bad.status_code == 422
    assert bad.json()["success"] is False
    for action in ("republish", "discard"):
        response = await dlq.post(
            f"/api/v1/failed/{uuid.uuid4()}/{action}", json={"reason": "cleanup"}
        )
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "not_found"


async def test_discard_requires_a_reason_and_records_the_actor(dlq: Harness) -> None:
    seeded = await _seed(dlq)
    target = seeded["B"]["id"]
    for body in ({}, {"reason": ""}, {"reason": "   "}, {"reason": 5}, {"reason": "x" * 1001}):
        response = await dlq.post(f"/api/v1/failed/{target}/discard", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"] == "validation_error"
    not_json = await dlq.post(
        f"/api/v1/failed/{target}/discard",
        content=b"{nope",
        headers={"Content-Type": "application/json"},
    )
    assert not_json.status_code == 400
    assert not_json.json()["error"] == "invalid_json"

    response = await dlq.post(
        f"/api/v1/failed/{target}/discard", json={"reason": "  user deleted their account "}
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["state"] == "discarded"
    detail = (await dlq.get(f"/api/v1/failed/{target}")).json()["data"]
    assert detail["state"] == "discarded"
    discarded = detail["events"][-1]
    assert discarded["action"] == "discarded"
    assert discarded["actor"] == ADMIN_SUB
    assert discarded["reason"] == "user deleted their account"

    # out of the default (pending) view, visible by state
    assert await _names(dlq, seeded) == ["E", "D", "C", "A"]
    assert await _names(dlq, seeded, state="discarded") == ["B"]
    assert len(await _names(dlq, seeded, state="all")) == 5

    again = await dlq.post(f"/api/v1/failed/{target}/discard", json={"reason": "twice"})
    assert again.status_code == 409
    assert again.json()["error"] == "already_discarded"
    republish = await dlq.post(f"/api/v1/failed/{target}/republish")
    assert republish.status_code == 409
    assert republish.json()["error"] == "not_republishable"


async def test_stats_count_by_state_channel_and_reason_and_feed_the_gauge(
    dlq: Harness,
) -> None:
    seeded = await _seed(dlq)
    await dlq.post(f"/api/v1/failed/{seeded['A']['id']}/discard", json={"reason": "spam"})
    response = await dlq.get("/api/v1/failed/stats")
    assert response.status_code == 200, response.text
    stats = response.json()["data"]
    assert stats["total"] == 5
    assert stats["by_state"] == {
        "pending": 4,
        "republishing": 0,
        "republished": 0,
        "discarded": 1,
        "archived": 0,
    }
    assert stats["by_channel"] == {"email": 3, "push": 2}
    assert stats["by_reason"] == {
        "retries_exhausted": 3,
        "permanent_error": 1,
        "invalid_message": 1,
    }
    assert stats["pending"] == {
        "total": 4,
        "by_channel": {"email": 2, "push": 2},
        "by_reason": {"retries_exhausted": 2, "permanent_error": 1, "invalid_message": 1},
    }
    metrics = (await dlq.client.get("/metrics")).text
    assert 'dlq_pending_failed_messages{channel="email"} 2.0' in metrics
    assert 'dlq_pending_failed_messages{channel="push"} 2.0' in metrics
    assert "dlq_failed_messages_received_total" in metrics
    assert "dlq_failed_messages_discarded_total" in metrics


async def test_ready_checks_postgres_redis_broker_and_the_consumer(dlq: Harness) -> None:
    assert (await dlq.client.get("/health")).status_code == 200
    openapi = (await dlq.client.get("/openapi.json")).json()
    assert {"/api/v1/failed/", "/api/v1/failed/{failed_id}/republish"} <= set(openapi["paths"])
    ready = await dlq.client.get("/ready")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["data"]["checks"]
    assert set(checks) == {"postgres", "redis", "rabbitmq", "consumer"}
    assert all(c["status"] == "ok" for c in checks.values())
    assert checks["consumer"]["queue"] == "failed.queue"

    await dlq.state.consumer.stop()
    not_ready = await dlq.client.get("/ready")
    assert not_ready.status_code == 503
    body = not_ready.json()
    assert body["error"] == "not_ready"
    assert body["data"]["checks"]["consumer"]["status"] == "down"
    assert body["data"]["checks"]["postgres"]["status"] == "ok"


async def test_messages_past_the_retention_are_archived_not_deleted(
    settings_factory: Callable[..., DlqSettings], token_factory: Callable[..., str]
) -> None:
    settings = settings_factory(retention_days=30, maintenance_interval_seconds=0.2)
    async with running(settings, token_factory("admin")) as dlq:
        old = notification(Channel.EMAIL)
        recent = notification(Channel.EMAIL)
        await dlq.service.store(
            incoming(old, failure_headers(failed_at=datetime.now(UTC) - timedelta(days=31)))
        )
        await dlq.service.store(
            incoming(recent, failure_headers(failed_at=datetime.now(UTC) - timedelta(days=29)))
        )

        async def archived() -> bool:
            response = await dlq.get("/api/v1/failed/", params={"state": "archived"})
            return bool(response.json()["meta"]["total"] == 1)

        await eventually(archived)
        row = (await dlq.get("/api/v1/failed/", params={"state": "archived"})).json()["data"][0]
        assert row["notification_id"] == str(old.notification_id)
        detail = (await dlq.get(f"/api/v1/failed/{row['id']}")).json()["data"]
        assert [(e["action"], e["actor"]) for e in detail["events"]] == [
            ("received", "system"),
            ("archived", "system"),
        ]
        assert detail["body"]  # still all there
        pending = (await dlq.get("/api/v1/failed/")).json()["data"]
        assert [r["notification_id"] for r in pending] == [str(recent.notification_id)]
        await asyncio.sleep(0.5)  # further passes do not archive it twice
        detail = (await dlq.get(f"/api/v1/failed/{row['id']}")).json()["data"]
        assert len(detail["events"]) == 2


async def test_values_postgresql_cannot_hold_are_422_not_503(dlq: Harness) -> None:
    # found by the fuzz tier (tests/fuzz): these reached the database and came back as 503
    for params in ({"page": 2**62}, {"reason": "a\x00b"}, {"error": "\x00"}):
        response = await dlq.get("/api/v1/failed/", params=params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["error"] == "validation_error"
    discard = await dlq.post(f"/api/v1/failed/{uuid.uuid4()}/discard", json={"reason": "x\x00"})
    assert discard.status_code == 422, discard.text


async def test_a_path_with_a_control_character_is_400_not_another_route(dlq: Harness) -> None:
    # /api/v1/failed/%0A used to be answered by the list route (a pattern's $ matches before \n)
    response = await dlq.get("/api/v1/failed/%0A")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_path"
