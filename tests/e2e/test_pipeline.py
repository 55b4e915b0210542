"""End to end, every service a separate process: register, log in, send, deliver, query."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import jwt
import pytest

pytestmark = pytest.mark.e2e


async def test_email_is_rendered_and_delivered_to_the_sink(system):
    user = await system.register_user()
    token = await system.login(user["email"], user["password"])
    assert token.count(".") == 2
    response = await system.send(
        notification_type="email",
        user_id=user["id"],
        template_code="e2e_welcome",
        variables={"name": "Ada", "link": "https://example.com/start"},
    )
    assert response.status_code == 202, response.text
    nid = response.json()["data"]["notification_id"]
    record = await system.wait_status(nid, "delivered")
    assert record["provider"] == "smtp"
    assert record["attempts"] == 1
    assert [e["event"] for e in record["timeline"]] == ["accepted", "processing", "delivered"]
    mail = next(m for m in system.sink.handler.snapshot() if m.notification_id == nid)
    assert mail.rcpt_tos == (user["email"],)
    assert mail.subject == "Welcome, Ada!"
    assert "Hello Ada" in mail.html
    assert 'href="https://example.com/start"' in mail.html
    assert "Hello Ada" in mail.text


async def test_push_is_rendered_and_delivered_to_fcm(system):
    device = f"device-{uuid.uuid4().hex}"
    user = await system.register_user(push_token=device)
    response = await system.send(
        notification_type="push",
        user_id=user["id"],
        template_code="e2e_push",
        variables={
            "name": "Grace",
            "count": 3,
            "link": "https://example.com/inbox",
            "image": "bell",
        },
        priority=7,
    )
    assert response.status_code == 202, response.text
    nid = response.json()["data"]["notification_id"]
    record = await system.wait_status(nid, "delivered")
    assert record["provider"] == "fcm"
    [sent] = system.fcm.delivered_to(device)
    assert sent["notification"] == {
        "title": "Hi Grace",
        "body": "You have 3 new messages",
        "image": "https://cdn.example.com/bell.png",
    }
    assert sent["data"]["notification_id"] == nid
    assert sent["data"]["link"] == "https://example.com/inbox"
    assert sent["android"]["priority"] == "high"


async def test_opted_out_user_is_skipped_and_nothing_is_sent(system):
    user = await system.register_user(email=False)
    response = await system.send(
        notification_type="email",
        user_id=user["id"],
        template_code="e2e_welcome",
        variables={"name": "Nobody", "link": "https://example.com"},
    )
    nid = response.json()["data"]["notification_id"]
    record = await system.wait_status(nid, "skipped")
    assert "opted out" in record["last_error"]
    await asyncio.sleep(0.5)
    assert nid not in system.sink.handler.counts()


async def test_push_to_a_user_without_devices_is_skipped(system):
    user = await system.register_user()
    response = await system.send(
        notification_type="push",
        user_id=user["id"],
        template_code="e2e_push",
        variables={"name": "X", "count": 1, "link": "https://e.x", "image": "i"},
    )
    record = await system.wait_status(response.json()["data"]["notification_id"], "skipped")
    assert "no push address or device" in record["last_error"]


async def test_same_request_id_twice_is_delivered_once(system):
    user = await system.register_user()
    body = {
        "notification_type": "email",
        "user_id": user["id"],
        "template_code": "e2e_welcome",
        "variables": {"name": "Once", "link": "https://example.com"},
        "request_id": f"once-{uuid.uuid4().hex}",
    }
    first = await system.send(**body)
    second = await system.send(**body)
    assert first.status_code == second.status_code == 202
    nid = first.json()["data"]["notification_id"]
    assert second.json()["data"]["notification_id"] == nid
    await system.wait_status(nid, "delivered")
    await asyncio.sleep(1.0)
    assert system.sink.handler.counts()[nid] == 1


async def test_unknown_user_and_template_are_refused_before_queueing(system):
    user = await system.register_user()
    unknown_user = await system.send(
        notification_type="email", user_id=str(uuid.uuid4()), template_code="e2e_welcome"
    )
    assert unknown_user.status_code == 422
    assert unknown_user.json()["error"] == "unknown_user"
    unknown_template = await system.send(
        notification_type="email", user_id=user["id"], template_code="does-not-exist"
    )
    assert unknown_template.status_code == 422
    assert unknown_template.json()["error"] == "unknown_template"
    wrong_kind = await system.send(
        notification_type="push", user_id=user["id"], template_code="e2e_welcome"
    )
    assert wrong_kind.status_code == 422
    assert wrong_kind.json()["error"] == "template_type_mismatch"


BAD = [
    pytest.param(b'{"notification_type": "email",', 400, "invalid_json", id="malformed-json"),
    pytest.param(
        b'{"notification_type": "email", "user_id": 42}', 422, "validation_error", id="wrong-type"
    ),
    pytest.param(
        b'{"notification_type": "fax", "user_id": "x", "template_code": "a", "request_id": "r"}',
        422,
        "validation_error",
        id="unknown-channel",
    ),
]


@pytest.mark.parametrize(("raw", "status", "code"), BAD)
async def test_malformed_bodies_get_the_4xx_envelope_and_nothing_is_sent(system, raw, status, code):
    before = len(system.sink.handler.snapshot())
    response = await system.http.post(
        f"{system.url('gateway')}/api/v1/notifications/",
        content=raw,
        headers={**await system.admin(), "Content-Type": "application/json"},
    )
    assert response.status_code == status
    envelope = response.json()
    assert envelope["success"] is False
    assert envelope["error"] == code
    await asyncio.sleep(0.3)
    assert len(system.sink.handler.snapshot()) == before


async def _sign_with_the_real_key(system, **claims) -> str:
    """A token signed with user_service's own active key (read from its database)."""
    conn = await asyncpg.connect(system.env["USER_DATABASE_URL"].replace("+asyncpg", ""))
    try:
        row = await conn.fetchrow(
            "SELECT kid, private_key_pem FROM signing_keys WHERE retired_at IS NULL "
            "ORDER BY created_at DESC LIMIT 1"
        )
    finally:
        await conn.close()
    return jwt.encode(
        claims, row["private_key_pem"], algorithm="RS256", headers={"kid": row["kid"]}
    )


async def test_missing_expired_forged_and_underprivileged_tokens_are_refused(system):
    user = await system.register_user()
    body = {"notification_type": "email", "user_id": user["id"], "template_code": "e2e_welcome"}
    missing = await system.send(headers={}, **body)
    assert missing.status_code == 401
    assert missing.json()["error"] == "missing_token"

    admin_token = (await system.admin())["Authorization"].split()[1]
    claims = jwt.decode(admin_token, options={"verify_signature": False})
    past = int((datetime.now(UTC) - timedelta(hours=1)).timestamp())
    expired = await _sign_with_the_real_key(system, **claims | {"exp": past, "iat": past - 900})
    response = await system.send(headers={"Authorization": f"Bearer {expired}"}, **body)
    assert response.status_code == 401
    assert response.json()["error"] == "token_expired"

    kid = jwt.get_unverified_header(admin_token)["kid"]
    forged = jwt.encode(claims, "x" * 32, algorithm="HS256", headers={"kid": kid})
    response = await system.send(headers={"Authorization": f"Bearer {forged}"}, **body)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"

    user_token = await system.login(user["email"], user["password"])
    as_user = await system.send(headers={"Authorization": f"Bearer {user_token}"}, **body)
    assert as_user.status_code == 403
    assert as_user.json()["error"] == "forbidden"


async def test_a_user_can_follow_their_own_notifications(system):
    user = await system.register_user()
    response = await system.send(
        notification_type="email",
        user_id=user["id"],
        template_code="e2e_welcome",
        variables={"name": "Me", "link": "https://example.com"},
    )
    nid = response.json()["data"]["notification_id"]
    await system.wait_status(nid, "delivered")
    token = await system.login(user["email"], user["password"])
    listed: list[str] = []
    for _ in range(100):  # lists come from the durable log, which trails the status a little
        mine = await system.http.get(
            f"{system.url('gateway')}/api/v1/notifications/",
            headers={"Authorization": f"Bearer {token}"},
        )
        listed = [n["notification_id"] for n in mine.json()["data"]]
        if listed:
            break
        await asyncio.sleep(0.05)
    assert listed == [nid]


async def test_dead_device_is_pruned_and_the_failure_lands_in_the_dlq_with_its_reason(system):
    live, dead = f"device-{uuid.uuid4().hex}", f"dead-{uuid.uuid4().hex}"
    user = await system.register_user(push_token=dead)
    variables = {"name": "Z", "count": 1, "link": "https://e.x", "image": "i"}
    response = await system.send(
        notification_type="push", user_id=user["id"], template_code="e2e_push", variables=variables
    )
    nid = response.json()["data"]["notification_id"]
    record = await system.wait_status(nid, "failed")
    assert "UNREGISTERED" in record["last_error"]
    admin = await system.admin()
    users = system.url("user_service")
    profile = (await system.http.get(f"{users}/api/v1/users/{user['id']}", headers=admin)).json()
    assert profile["data"]["push_tokens"] == []  # pruned at the user service
    for _ in range(50):
        failed = await system.http.get(
            f"{system.url('dlq_service')}/api/v1/failed/",
            params={"notification_id": nid},
            headers=admin,
        )
        if failed.json()["data"]:
            break
        await asyncio.sleep(0.1)
    [entry] = failed.json()["data"]
    assert entry["reason"] == "permanent_error"
    assert entry["service"] == "push_service"
    assert "UNREGISTERED" in entry["error"]

    # a device that works is used; the pruned one is not tried again
    user_token = await system.login(user["email"], user["password"])
    added = await system.http.post(
        f"{users}/api/v1/users/{user['id']}/push-tokens",
        json={"token": live},
        headers={"Authorization": f"Bearer {user_token}"},
    )
    assert added.status_code == 201, added.text
    again = await system.send(
        notification_type="push", user_id=user["id"], template_code="e2e_push", variables=variables
    )
    await system.wait_status(again.json()["data"]["notification_id"], "delivered")
    assert len(system.fcm.delivered_to(live)) == 1


async def test_a_preference_change_reaches_delivery_within_a_second(system):
    user = await system.register_user()
    variables = {"name": "Pref", "link": "https://example.com"}
    first = await system.send(
        notification_type="email",
        user_id=user["id"],
        template_code="e2e_welcome",
        variables=variables,
    )
    await system.wait_status(first.json()["data"]["notification_id"], "delivered")
    token = await system.login(user["email"], user["password"])
    changed = await system.http.patch(
        f"{system.url('user_service')}/api/v1/users/{user['id']}/preferences",
        json={"email": False},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert changed.status_code == 200
    await asyncio.sleep(1.0)
    second = await system.send(
        notification_type="email",
        user_id=user["id"],
        template_code="e2e_welcome",
        variables=variables,
    )
    record = await system.wait_status(second.json()["data"]["notification_id"], "skipped")
    assert "opted out" in record["last_error"]


async def test_a_template_change_reaches_delivery_within_a_second(system):
    user = await system.register_user()
    code = f"changing-{uuid.uuid4().hex[:8]}"
    await system.create_template(
        code=code,
        name="Changing",
        type="email",
        subject="Version one for {{ name }}",
        content="<p>one</p>",
    )
    variables = {"name": "Ada"}
    first = await system.send(
        notification_type="email", user_id=user["id"], template_code=code, variables=variables
    )
    first_id = first.json()["data"]["notification_id"]
    await system.wait_status(first_id, "delivered")
    updated = await system.http.put(
        f"{system.url('template_service')}/api/v1/templates/{code}",
        json={"subject": "Version two for {{ name }}", "content": "<p>two</p>"},
        headers=await system.admin(),
    )
    assert updated.status_code == 200, updated.text
    await asyncio.sleep(1.0)
    second = await system.send(
        notification_type="email", user_id=user["id"], template_code=code, variables=variables
    )
    second_id = second.json()["data"]["notification_id"]
    await system.wait_status(second_id, "delivered")
    subjects = {m.notification_id: m.subject for m in system.sink.handler.snapshot()}
    assert subjects[first_id] == "Version one for Ada"
    assert subjects[second_id] == "Version two for Ada"


async def test_html_in_variables_is_escaped_and_any_script_arrives_intact(system):
    user = await system.register_user(name="مريم Müller 山田")
    variables = {
        "name": '<script>alert("x")</script> שלום 日本語 😀',
        "link": "https://e.x/?a=1&b=2",
    }
    response = await system.send(
        notification_type="email",
        user_id=user["id"],
        template_code="e2e_welcome",
        variables=variables,
    )
    nid = response.json()["data"]["notification_id"]
    await system.wait_status(nid, "delivered")
    mail = next(m for m in system.sink.handler.snapshot() if m.notification_id == nid)
    assert "<script>" not in mail.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; שלום 日本語 😀" in mail.html
    assert 'href="https://e.x/?a=1&amp;b=2"' in mail.html
    # the subject is plain text: not escaped, and every script survives the trip through SMTP
    assert mail.subject == 'Welcome, <script>alert("x")</script> שלום 日本語 😀!'
    assert mail.headers["To"].startswith("مريم Müller 山田")
