"""Status queries, provider receipts, rate limits, broker outages and operational endpoints."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from gateway.app import create_app
from tests.gateway.test_send import body
from tests.support.amqp import queue_depth
from tests.support.proxy import TcpProxy
from tests.support.servers import app_client


async def _send(gateway, mint, **overrides):
    response = await gateway.post(
        "/api/v1/notifications/", json=body(**overrides), headers=mint.headers("service", sub="svc")
    )
    assert response.status_code == 202, response.text
    return response.json()["data"]


async def recorded(gateway, *sent) -> None:
    """Wait until the history recorder has moved these notifications into PostgreSQL (the list
    reads from there; under load the recorder trails the status writes by about
    ``HISTORY_LINGER_MS``)."""
    for _ in range(200):
        found = [await gateway.state.history.get(s["notification_id"]) for s in sent]
        if all(found):
            return
        await asyncio.sleep(0.025)
    raise AssertionError("not recorded in the history")


async def test_status_by_notification_id_and_by_request_id(gateway, mint):
    sent = await _send(gateway, mint)
    headers = mint.headers("service", sub="svc")
    by_id = await gateway.get(f"/api/v1/notifications/{sent['notification_id']}", headers=headers)
    by_request = await gateway.get(f"/api/v1/notifications/{sent['request_id']}", headers=headers)
    assert by_id.status_code == by_request.status_code == 200
    record = by_id.json()["data"]
    assert by_request.json()["data"]["notification_id"] == record["notification_id"]
    assert record["status"] == "pending"
    assert record["attempts"] == 0
    assert record["timeline"][0]["event"] == "accepted"


async def test_unknown_notification_is_404(gateway, mint):
    response = await gateway.get(f"/api/v1/notifications/{uuid.uuid4()}", headers=mint.headers())
    assert response.status_code == 404
    assert response.json()["error"] == "notification_not_found"


async def test_a_user_sees_only_their_own_notifications(gateway, mint):
    me = str(uuid.uuid4())
    mine = await _send(gateway, mint, user_id=me)
    theirs = await _send(gateway, mint)
    as_me = mint.headers("user", sub=me)
    await recorded(gateway, mine, theirs)
    assert (
        await gateway.get(f"/api/v1/notifications/{mine['notification_id']}", headers=as_me)
    ).status_code == 200
    assert (
        await gateway.get(f"/api/v1/notifications/{theirs['notification_id']}", headers=as_me)
    ).status_code == 404
    listed = await gateway.get("/api/v1/notifications/", headers=as_me)
    assert [n["notification_id"] for n in listed.json()["data"]] == [mine["notification_id"]]


async def test_list_filters_and_paginates(gateway, mint):
    user = str(uuid.uuid4())
    sent = [await _send(gateway, mint, user_id=user) for _ in range(3)]
    sent.append(await _send(gateway, mint, user_id=user, notification_type="push"))
    await recorded(gateway, *sent)
    response = await gateway.get(
        "/api/v1/notifications/",
        params={"user_id": user, "notification_type": "email", "limit": 2, "page": 1},
        headers=mint.headers(),
    )
    envelope = response.json()
    assert response.status_code == 200
    assert len(envelope["data"]) == 2
    assert envelope["meta"] == {
        "total": 3,
        "limit": 2,
        "page": 1,
        "total_pages": 2,
        "has_next": True,
        "has_previous": False,
    }
    bad = await gateway.get(
        "/api/v1/notifications/", params={"status": "lost"}, headers=mint.headers()
    )
    assert bad.status_code == 422


async def test_receipts_and_bounces_update_the_status(gateway, mint, gateway_settings, redis):
    sent = await _send(gateway, mint)
    nid = sent["notification_id"]
    report = {
        "notification_id": nid,
        "status": "delivered",
        "timestamp": datetime.now(UTC).isoformat(),
    }
    ok = await gateway.post(
        "/api/v1/email/status/", json=report | {"provider": "smtp"}, headers=mint.headers("service")
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["data"]["status"] == "delivered"
    bounce = report | {"status": "failed", "error": "550 mailbox gone"}
    bounced = await gateway.post(
        "/api/v1/email/status/", json=bounce, headers=mint.headers("service")
    )
    assert bounced.status_code == 200
    record = bounced.json()["data"]
    assert record["status"] == "failed"
    assert record["last_error"] == "550 mailbox gone"
    assert record["timeline"][-1]["event"] == "bounce"
    # failed does not go back to delivered by a late receipt
    late = await gateway.post("/api/v1/email/status/", json=report, headers=mint.headers("service"))
    assert late.status_code == 409
    assert late.json()["error"] == "invalid_transition"


async def test_status_report_checks_type_identity_and_role(gateway, mint):
    sent = await _send(gateway, mint)
    report = {
        "notification_id": sent["notification_id"],
        "status": "delivered",
        "timestamp": datetime.now(UTC).isoformat(),
    }
    wrong_type = await gateway.post(
        "/api/v1/push/status/", json=report, headers=mint.headers("service")
    )
    assert wrong_type.status_code == 422
    assert wrong_type.json()["error"] == "type_mismatch"
    unknown = await gateway.post(
        "/api/v1/email/status/",
        json=report | {"notification_id": str(uuid.uuid4())},
        headers=mint.headers("service"),
    )
    assert unknown.status_code == 404
    as_user = await gateway.post("/api/v1/email/status/", json=report, headers=mint.headers("user"))
    assert as_user.status_code == 403
    bad_channel = await gateway.post(
        "/api/v1/sms/status/", json=report, headers=mint.headers("service")
    )
    assert bad_channel.status_code == 422


async def test_rate_limit_answers_429_with_retry_after(gateway_settings, mint, amqp):
    settings = gateway_settings.model_copy(
        update={"rate_limit_per_second": 1, "rate_limit_burst": 2}
    )
    async with app_client(create_app(settings)) as client:
        headers = mint.headers("service", sub="greedy")
        codes = [
            (await client.post("/api/v1/notifications/", json=body(), headers=headers)).status_code
            for _ in range(3)
        ]
        limited = await client.post("/api/v1/notifications/", json=body(), headers=headers)
        other = await client.post(
            "/api/v1/notifications/", json=body(), headers=mint.headers("service", sub="polite")
        )
    assert codes[:2] == [202, 202]
    assert codes[2] == 429
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"] == "rate_limited"
    assert other.status_code == 202  # limits are per caller
    assert await queue_depth(amqp, "email.queue") == 3


async def test_broker_outage_gives_503_not_202_and_recovers_without_restart(
    gateway_settings, mint, amqp, redis
):
    proxy = await TcpProxy("127.0.0.1", 5672).start()
    vhost = gateway_settings.rabbitmq_url.rsplit("/", 1)[1]
    settings = gateway_settings.model_copy(
        update={"rabbitmq_url": f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}"}
    )
    try:
        async with app_client(create_app(settings)) as client:
            headers = mint.headers("service", sub="svc")
            assert (
                await client.post("/api/v1/notifications/", json=body(), headers=headers)
            ).status_code == 202
            await proxy.cut()
            payload = body()
            during = await client.post("/api/v1/notifications/", json=payload, headers=headers)
            assert during.status_code == 503, during.text
            assert during.json()["error"] == "broker_unavailable"
            ready = await client.get("/ready")
            assert ready.status_code == 503
            # nothing half-done: the request id is free and no status record was left behind
            records = [
                key
                async for key in redis.scan_iter(match=f"{settings.redis_key_prefix}notif:*")
                if not key.endswith(b":timeline")
            ]
            assert len(records) == 1
            await proxy.restore()
            for _ in range(100):
                again = await client.post("/api/v1/notifications/", json=payload, headers=headers)
                if again.status_code == 202:
                    break
                await asyncio.sleep(0.2)
            assert again.status_code == 202
    finally:
        await proxy.close()
    assert await queue_depth(amqp, "email.queue") == 2


async def test_health_ready_metrics_and_docs(gateway, mint):
    health = await gateway.get("/health")
    assert health.status_code == 200
    assert health.json()["data"]["status"] == "ok"
    ready = await gateway.get("/ready")
    assert ready.status_code == 200
    assert set(ready.json()["data"]["checks"]) == {"redis", "rabbitmq"}
    await _send(gateway, mint)
    metrics = await gateway.get("/metrics")
    assert metrics.status_code == 200
    assert (
        'http_requests_total{method="POST",route="/api/v1/notifications/",status="202"}'
        in metrics.text
    )
    assert "messages_published_total" in metrics.text
    spec = (await gateway.get("/openapi.json")).json()
    assert "/api/v1/notifications/" in spec["paths"]
    assert "/api/v1/{notification_type}/status/" in spec["paths"]


async def test_unknown_route_and_method_use_the_envelope(gateway, mint):
    missing = await gateway.get("/api/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong = await gateway.delete("/api/v1/notifications/", headers=mint.headers())
    assert wrong.status_code == 405
    assert wrong.json()["success"] is False


async def test_redis_outage_gives_503_never_202_or_500_and_recovers(gateway_settings, mint, amqp):
    proxy = await TcpProxy("127.0.0.1", 6379).start()
    settings = gateway_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{proxy.port}/0"}
    )
    try:
        async with app_client(create_app(settings)) as client:
            headers = mint.headers("service", sub="svc")
            first = await client.post("/api/v1/notifications/", json=body(), headers=headers)
            assert first.status_code == 202
            nid = first.json()["data"]["notification_id"]
            for _ in range(100):  # the recorder moves it into the durable log within a moment
                if await client.state.history.get(nid) is not None:
                    break
                await asyncio.sleep(0.05)
            await proxy.cut()
            during = [
                await client.post("/api/v1/notifications/", json=body(), headers=headers)
                for _ in range(5)
            ]
            assert {r.status_code for r in during} == {503}
            assert all(r.json()["success"] is False for r in during)
            assert all(
                r.json()["error"] in ("redis_unavailable", "service_unavailable") for r in during
            )
            # reads still work, from the durable log
            status = await client.get(f"/api/v1/notifications/{nid}", headers=headers)
            assert status.status_code == 200
            assert status.json()["data"]["status"] == "pending"
            assert await queue_depth(amqp, "email.queue") == 1  # nothing queued without a record
            await proxy.restore()
            for _ in range(100):
                again = await client.post("/api/v1/notifications/", json=body(), headers=headers)
                if again.status_code == 202:
                    break
                await asyncio.sleep(0.2)
            assert again.status_code == 202
    finally:
        await proxy.close()
