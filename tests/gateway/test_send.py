"""POST /api/v1/notifications/: accepted once confirmed, idempotent, and strict about input."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from libs.messaging import headers as H
from libs.notification.message import NotificationMessage
from tests.support.amqp import get_one, queue_depth


def body(**overrides):
    return {
        "notification_type": "email",
        "user_id": str(uuid.uuid4()),
        "template_code": "welcome",
        "variables": {"name": "Ada", "link": "https://example.com"},
        "request_id": f"req-{uuid.uuid4().hex[:12]}",
        "priority": 3,
        "metadata": {"campaign": "launch"},
    } | overrides


async def test_accepted_notification_is_on_the_queue_as_a_persistent_message(gateway, mint, amqp):
    payload = body()
    response = await gateway.post(
        "/api/v1/notifications/",
        json=payload,
        headers={**mint.headers("service"), "X-Correlation-ID": "corr-123"},
    )
    assert response.status_code == 202, response.text
    envelope = response.json()
    assert envelope["success"] is True
    assert envelope["error"] is None
    data = envelope["data"]
    assert data["status"] == "pending"
    assert data["request_id"] == payload["request_id"]
    assert response.headers["x-correlation-id"] == "corr-123"

    message = await get_one(amqp, "email.queue", timeout=5)
    assert message.message_id == data["notification_id"]
    assert message.correlation_id == "corr-123"
    assert message.delivery_mode == 2  # persistent
    assert message.priority == 3
    assert message.content_type == "application/json"
    assert message.headers[H.ATTEMPTS] == 0
    decoded = NotificationMessage.from_bytes(message.body)
    assert str(decoded.notification_id) == data["notification_id"]
    assert decoded.variables == payload["variables"]
    assert decoded.metadata == payload["metadata"]
    assert str(decoded.user_id) == payload["user_id"]


async def test_push_goes_to_the_push_queue(gateway, mint, amqp):
    response = await gateway.post(
        "/api/v1/notifications/", json=body(notification_type="push"), headers=mint.headers()
    )
    assert response.status_code == 202
    assert await queue_depth(amqp, "push.queue") == 1
    assert await queue_depth(amqp, "email.queue") == 0


async def test_same_request_id_and_body_returns_the_first_answer_and_publishes_once(
    gateway, mint, amqp
):
    payload = body()
    headers = mint.headers("service", sub="client-a")
    first = await gateway.post("/api/v1/notifications/", json=payload, headers=headers)
    second = await gateway.post("/api/v1/notifications/", json=payload, headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.json()["data"] == first.json()["data"]
    assert second.headers.get("idempotent-replayed") == "true"
    assert await queue_depth(amqp, "email.queue") == 1


async def test_same_request_id_with_another_body_is_a_conflict(gateway, mint, amqp):
    payload = body()
    headers = mint.headers("service", sub="client-a")
    assert (
        await gateway.post("/api/v1/notifications/", json=payload, headers=headers)
    ).status_code == 202
    changed = payload | {"variables": {"name": "Grace"}}
    response = await gateway.post("/api/v1/notifications/", json=changed, headers=headers)
    assert response.status_code == 409
    assert response.json()["error"] == "idempotency_conflict"
    assert await queue_depth(amqp, "email.queue") == 1


async def test_request_ids_are_scoped_per_caller(gateway, mint, amqp):
    payload = body()
    a = await gateway.post(
        "/api/v1/notifications/", json=payload, headers=mint.headers("service", sub="a")
    )
    b = await gateway.post(
        "/api/v1/notifications/", json=payload, headers=mint.headers("service", sub="b")
    )
    assert a.status_code == b.status_code == 202
    assert a.json()["data"]["notification_id"] != b.json()["data"]["notification_id"]
    assert await queue_depth(amqp, "email.queue") == 2


async def test_twenty_simultaneous_identical_requests_publish_once(gateway, mint, amqp):
    payload = body()
    headers = mint.headers("service", sub="burst")
    responses = await asyncio.gather(
        *(gateway.post("/api/v1/notifications/", json=payload, headers=headers) for _ in range(20))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["data"]["notification_id"] for r in responses}) == 1
    await asyncio.sleep(0.2)
    assert await queue_depth(amqp, "email.queue") == 1


BAD_BODIES = [
    pytest.param({"notification_type": "sms"}, "notification_type", id="unknown-type"),
    pytest.param({"user_id": "not-a-uuid"}, "user_id", id="bad-uuid"),
    pytest.param({"priority": "high"}, "priority", id="priority-not-int"),
    pytest.param({"priority": 11}, "priority", id="priority-too-high"),
    pytest.param({"priority": -1}, "priority", id="priority-negative"),
    pytest.param({"variables": ["a", "b"]}, "variables", id="variables-not-object"),
    pytest.param({"metadata": "x"}, "metadata", id="metadata-not-object"),
    pytest.param({"template_code": ""}, "template_code", id="empty-template"),
    pytest.param({"template_code": "../etc"}, "template_code", id="template-pattern"),
    pytest.param({"template_code": "a"}, "template_code", id="template-too-short"),
    pytest.param({"request_id": ""}, "request_id", id="empty-request-id"),
    pytest.param({"request_id": "x" * 200}, "request_id", id="long-request-id"),
    pytest.param({"language": "english please"}, "language", id="bad-language"),
    pytest.param({"unexpected": 1}, "unexpected", id="unknown-field"),
]


@pytest.mark.parametrize(("change", "field"), BAD_BODIES)
async def test_invalid_bodies_get_422_naming_the_field_and_queue_nothing(
    gateway, mint, amqp, change, field
):
    response = await gateway.post(
        "/api/v1/notifications/", json=body(**change), headers=mint.headers()
    )
    assert response.status_code == 422, response.text
    envelope = response.json()
    assert envelope["success"] is False
    assert envelope["error"] == "validation_error"
    assert field in {e["field"] for e in envelope["data"]["errors"]}
    assert await queue_depth(amqp, "email.queue") == 0


@pytest.mark.parametrize("missing", ["notification_type", "user_id", "template_code", "request_id"])
async def test_missing_required_field_is_422(gateway, mint, amqp, missing):
    payload = body()
    del payload[missing]
    response = await gateway.post("/api/v1/notifications/", json=payload, headers=mint.headers())
    assert response.status_code == 422
    assert missing in response.json()["message"]
    assert await queue_depth(amqp, "email.queue") == 0


async def test_malformed_json_is_400(gateway, mint, amqp):
    response = await gateway.post(
        "/api/v1/notifications/",
        content=b'{"notification_type": "email", ',
        headers={**mint.headers(), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
    assert await queue_depth(amqp, "email.queue") == 0


async def test_body_that_is_not_an_object_is_422(gateway, mint, amqp):
    response = await gateway.post("/api/v1/notifications/", json=[1, 2], headers=mint.headers())
    assert response.status_code == 422
    assert await queue_depth(amqp, "email.queue") == 0


async def test_oversized_body_is_413(gateway, mint, amqp):
    huge = body(variables={"blob": "x" * 100_000})
    response = await gateway.post("/api/v1/notifications/", json=huge, headers=mint.headers())
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert await queue_depth(amqp, "email.queue") == 0


@pytest.mark.parametrize("path", ["/api/v1/notifications/", "/api/v1/notifications/batch"])
async def test_oversized_body_sent_in_chunks_without_a_length_is_413(gateway, mint, amqp, path):
    """No Content-Length to refuse it by: the limit is met while the body is read (FastAPI turned
    that into a 400 "error parsing the body" before the limit raised an HTTP error)."""

    async def chunks():
        for _ in range(2_200):  # 2.2 MB, over both routes' limits
            yield b" " * 1_000

    response = await gateway.post(
        path, content=chunks(), headers={**mint.headers(), "Content-Type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "payload_too_large"
    assert await queue_depth(amqp, "email.queue") == 0


AUTH_FAILURES = [
    pytest.param(lambda m: {}, 401, "missing_token", id="missing"),
    pytest.param(lambda m: {"Authorization": "Basic abc"}, 401, "missing_token", id="not-bearer"),
    pytest.param(
        lambda m: {"Authorization": "Bearer not.a.jwt"}, 401, "invalid_token", id="garbage"
    ),
    pytest.param(lambda m: m.headers(ttl=-60), 401, "token_expired", id="expired"),
    pytest.param(lambda m: m.headers(audience="someone-else"), 401, "invalid_token", id="audience"),
    pytest.param(lambda m: m.headers(issuer="evil"), 401, "invalid_token", id="issuer"),
    pytest.param(
        lambda m: m.headers(kid=m.add_key(publish=False)), 401, "invalid_token", id="unknown-key"
    ),
    pytest.param(lambda m: m.headers("user"), 403, "forbidden", id="user-role"),
]


@pytest.mark.parametrize(("make_headers", "status", "code"), AUTH_FAILURES)
async def test_bad_credentials_are_refused_and_queue_nothing(
    gateway, mint, amqp, make_headers, status, code
):
    response = await gateway.post("/api/v1/notifications/", json=body(), headers=make_headers(mint))
    assert response.status_code == status, response.text
    assert response.json()["error"] == code
    assert await queue_depth(amqp, "email.queue") == 0


async def test_forged_signature_is_refused(gateway, mint, amqp):
    token = mint.mint("admin")
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    response = await gateway.post(
        "/api/v1/notifications/", json=body(), headers={"Authorization": f"Bearer {forged}"}
    )
    assert response.status_code == 401
    assert await queue_depth(amqp, "email.queue") == 0


async def test_rotated_signing_key_is_picked_up_without_restart(gateway, mint):
    assert (
        await gateway.post("/api/v1/notifications/", json=body(), headers=mint.headers())
    ).status_code == 202
    mint.active = mint.add_key()  # user_service rotated: the new key appears in the JWKS
    response = await gateway.post("/api/v1/notifications/", json=body(), headers=mint.headers())
    assert response.status_code == 202


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("variables", {"n": 2**64}),
        ("variables", {"n": -(2**63) - 1}),
        ("metadata", {"deep": json.loads("[" * 300 + "]" * 300)}),
        ("variables", {"deep": json.loads("[" * 40 + "]" * 40)}),
        ("variables", {"n": float("nan")}),
        ("metadata", {"n": float("-inf")}),
    ],
    ids=[
        "int-over-64-bits",
        "int-under-64-bits",
        "nested-300-deep",
        "nested-40-deep",
        "nan",
        "inf",
    ],
)
async def test_values_the_message_cannot_carry_are_422_and_queue_nothing(
    gateway, mint, amqp, field, value
):
    # found by the fuzz tier (tests/fuzz): the idempotency fingerprint (orjson) raised -> 500 for
    # integers beyond 64 bits and nesting beyond 254 levels; 32 levels is the documented limit.
    # Found by tests/unit/test_message_decoder.py: NaN and Infinity were sent on as null.
    response = await gateway.post(
        "/api/v1/notifications/",
        content=json.dumps(body(**{field: value})),  # as any client may write it (NaN included)
        headers=mint.headers() | {"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["data"]["errors"][0]["field"].startswith(field)
    assert await queue_depth(amqp, "email.queue") == 0


async def test_a_path_with_a_control_character_is_400_not_the_list(gateway, mint):
    response = await gateway.get("/api/v1/notifications/%0A", headers=mint.headers())
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_path"
