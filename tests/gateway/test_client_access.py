"""Client backends at the gateway: they send, and see only what they sent (others' is 404); their
view of provider errors names no address; a revoked client is refused at once."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from libs.storage.redis import Keys
from tests.gateway.test_send import body
from tests.gateway.test_status_and_ops import recorded
from tests.support.amqp import queue_depth

SHOP, BANK = str(uuid.uuid4()), str(uuid.uuid4())  # two client backends' ids (token subjects)


async def _send(gateway, mint, client_id: str, **overrides) -> dict[str, str]:
    response = await gateway.post(
        "/api/v1/notifications/", json=body(**overrides), headers=mint.headers("client", client_id)
    )
    assert response.status_code == 202, response.text
    return dict(response.json()["data"])


def _report(nid: str, status: str = "delivered", **extra: str) -> dict[str, str]:
    return {
        "notification_id": nid,
        "status": status,
        "timestamp": datetime.now(UTC).isoformat(),
        **extra,
    }


async def test_a_client_reads_its_own_notifications_by_id_and_request_id(gateway, mint, amqp):
    sent = await _send(gateway, mint, SHOP)
    as_shop = mint.headers("client", SHOP)

    by_id = await gateway.get(f"/api/v1/notifications/{sent['notification_id']}", headers=as_shop)
    by_request = await gateway.get(f"/api/v1/notifications/{sent['request_id']}", headers=as_shop)

    assert by_id.status_code == by_request.status_code == 200
    assert by_request.json()["data"]["notification_id"] == sent["notification_id"]
    assert "owner" not in by_id.json()["data"]
    assert await queue_depth(amqp, "email.queue") == 1


async def test_another_clients_notification_is_404_like_a_missing_one(gateway, mint):
    theirs = await _send(gateway, mint, BANK)
    as_shop = mint.headers("client", SHOP)

    by_id = await gateway.get(f"/api/v1/notifications/{theirs['notification_id']}", headers=as_shop)
    by_request = await gateway.get(f"/api/v1/notifications/{theirs['request_id']}", headers=as_shop)
    missing = await gateway.get(f"/api/v1/notifications/{uuid.uuid4()}", headers=as_shop)

    assert by_id.status_code == by_request.status_code == missing.status_code == 404
    assert by_id.json()["error"] == missing.json()["error"] == "notification_not_found"


async def test_a_client_lists_only_what_it_sent(gateway, mint):
    user = str(uuid.uuid4())
    mine = [await _send(gateway, mint, SHOP, user_id=user) for _ in range(2)]
    others = [await _send(gateway, mint, sub, user_id=user) for sub in (BANK, "admin-sub")]
    await recorded(gateway, *mine, *others)
    as_shop = mint.headers("client", SHOP)

    listed = await gateway.get("/api/v1/notifications/", headers=as_shop)
    for_user = await gateway.get(
        "/api/v1/notifications/", params={"user_id": user}, headers=as_shop
    )
    as_admin = await gateway.get(
        "/api/v1/notifications/", params={"user_id": user}, headers=mint.headers()
    )

    expected = sorted(n["notification_id"] for n in mine)
    assert sorted(n["notification_id"] for n in listed.json()["data"]) == expected
    assert listed.json()["meta"]["total"] == 2
    assert sorted(n["notification_id"] for n in for_user.json()["data"]) == expected
    assert as_admin.json()["meta"]["total"] == 4


async def test_a_client_reports_receipts_only_for_its_own_notifications(gateway, mint):
    mine = await _send(gateway, mint, SHOP)
    theirs = await _send(gateway, mint, BANK)
    as_shop = mint.headers("client", SHOP)

    own = await gateway.post(
        "/api/v1/email/status/", json=_report(mine["notification_id"]), headers=as_shop
    )
    other = await gateway.post(
        "/api/v1/email/status/", json=_report(theirs["notification_id"]), headers=as_shop
    )
    untouched = await gateway.get(
        f"/api/v1/notifications/{theirs['notification_id']}", headers=mint.headers()
    )

    assert own.status_code == 200, own.text
    assert own.json()["data"]["status"] == "delivered"
    assert other.status_code == 404
    assert untouched.json()["data"]["status"] == "pending"


async def test_a_client_never_sees_the_recipients_address_or_device_token(gateway, mint):
    sent = await _send(gateway, mint, SHOP)
    token = "fcm:" + "A" * 140
    error = f"550 5.1.1 <ada.lovelace@example.com>: mailbox unavailable (device {token})"
    bounced = await gateway.post(
        "/api/v1/email/status/",
        json=_report(sent["notification_id"], "failed", error=error),
        headers=mint.headers("service"),
    )
    assert bounced.status_code == 200, bounced.text
    path = f"/api/v1/notifications/{sent['notification_id']}"
    await recorded(gateway, sent)

    as_shop = await gateway.get(path, headers=mint.headers("client", SHOP))
    listed = await gateway.get("/api/v1/notifications/", headers=mint.headers("client", SHOP))
    as_admin = await gateway.get(path, headers=mint.headers())

    shown = as_shop.json()["data"]
    assert shown["last_error"] == "550 5.1.1 <<redacted>>: mailbox unavailable (device <redacted>)"
    assert shown["timeline"][-1]["error"] == shown["last_error"]
    for text in (as_shop.text, listed.text):
        assert "ada.lovelace@example.com" not in text
        assert token not in text
    assert as_admin.json()["data"]["last_error"] == error


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/v1/notifications/"), ("GET", "/api/v1/notifications/")],
)
async def test_a_revoked_client_is_refused_before_its_token_expires(
    gateway, mint, gateway_settings, redis, amqp, method, path
):
    await redis.set(Keys(gateway_settings.redis_key_prefix).revoked_client(SHOP), "1", ex=60)

    response = await gateway.request(
        method,
        path,
        json=body() if method == "POST" else None,
        headers=mint.headers("client", SHOP),
    )
    other_client = await gateway.get(
        path if method == "GET" else "/api/v1/notifications/", headers=mint.headers("client", BANK)
    )

    assert response.status_code == 401
    assert response.json()["error"] == "token_revoked"
    assert other_client.status_code == 200
    assert await queue_depth(amqp, "email.queue") == 0
