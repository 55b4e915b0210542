"""POST /api/v1/users/: who may register what, validation, and that passwords never leak."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import select

from libs.storage.db import create_engine, session_factory
from tests.support.servers import app_client
from tests.user_service.conftest import PASSWORD, bearer, login, register, unique_email
from user_service.app import create_app
from user_service.models import User


async def test_registration_returns_the_user_without_the_password(client, settings):
    email = unique_email("Mixed.Case").replace("example.com", "Example.COM")
    response = await client.post(
        "/api/v1/users/", json={"name": "  Ann Lee ", "email": email, "password": PASSWORD}
    )

    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    assert body["error"] is None
    user = body["data"]
    assert set(user) == {
        "id",
        "name",
        "email",
        "role",
        "language",
        "preferences",
        "push_tokens",
        "created_at",
        "updated_at",
    }
    assert user["name"] == "Ann Lee"
    assert user["email"] == email.lower()
    assert user["role"] == "user"
    assert user["language"] == "en"
    assert user["preferences"] == {"email": True, "push": True}
    assert user["push_tokens"] == []
    assert PASSWORD not in response.text
    assert "password" not in response.text

    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            stored = (await session.exec(select(User).where(User.email == email.lower()))).one()
    finally:
        await engine.dispose()
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash


async def test_registration_accepts_device_preferences_and_language(client):
    user = await register(
        client,
        push_token="fcm-token-registration",
        preferences={"email": False, "push": True},
        language="pt-br",
    )

    assert user["preferences"] == {"email": False, "push": True}
    assert user["language"] == "pt-BR"
    assert [t["token"] for t in user["push_tokens"]] == ["fcm-token-registration"]


async def test_registered_user_can_log_in(client):
    user = await register(client)

    token = await login(client, user["email"])

    me = await client.get("/api/v1/users/me", headers=bearer(token))
    assert me.json()["data"]["id"] == user["id"]


async def test_duplicate_email_is_409_whatever_its_case(client):
    email = unique_email()
    await register(client, email=email)

    response = await client.post(
        "/api/v1/users/", json={"name": "Again", "email": email.upper(), "password": PASSWORD}
    )

    assert response.status_code == 409
    assert response.json()["error"] == "email_taken"


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("short1abc", "min_length"),
        ("a1" * 65, "max_length"),
        ("1234567890123", "letter"),
        ("abcdefghijklm", "digit"),
    ],
)
async def test_weak_password_is_422_naming_the_rule(client, password, rule):
    response = await client.post(
        "/api/v1/users/", json={"name": "Weak", "email": unique_email(), "password": password}
    )

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "weak_password"
    assert body["data"] == {"rule": rule}
    assert password not in response.text


async def test_password_equal_to_the_email_is_weak(client):
    email = unique_email("pw1")
    response = await client.post(
        "/api/v1/users/", json={"name": "Same", "email": email, "password": email.upper()}
    )

    assert response.status_code == 422
    assert response.json()["data"] == {"rule": "not_email"}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": "a@@example.com"}, "email"),
        ({"name": "   "}, "name"),
        ({"name": 123}, "name"),
        ({"password": 1234567890}, "password"),
        ({"preferences": {"email": "yes", "push": True}}, "preferences.email"),
        ({"preferences": {"sms": True}}, "preferences.sms"),
        ({"role": "superuser"}, "role"),
        ({"language": "english please"}, "language"),
        ({"push_token": ""}, "push_token"),
        ({"is_admin": True}, "is_admin"),
    ],
)
async def test_invalid_registration_is_422_naming_the_field(client, change, field):
    body = {"name": "Val", "email": unique_email(), "password": PASSWORD, **change}

    response = await client.post("/api/v1/users/", json=body)

    assert response.status_code == 422
    payload = response.json()
    assert payload["success"] is False
    assert payload["error"] == "validation_error"
    assert field in [error["field"] for error in payload["data"]["errors"]]


async def test_missing_password_and_bad_json_are_refused(client):
    missing = await client.post("/api/v1/users/", json={"name": "X", "email": unique_email()})
    broken = await client.post(
        "/api/v1/users/", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )

    assert missing.status_code == 422
    assert missing.json()["data"]["errors"][0]["field"] == "password"
    assert broken.status_code == 400
    assert broken.json()["error"] == "invalid_json"


@pytest.mark.parametrize("role", ["admin", "service"])
async def test_only_an_admin_creates_privileged_accounts(client, admin_headers, alice, role):
    body = {"name": "Priv", "email": unique_email(), "password": PASSWORD, "role": role}

    anonymous = await client.post("/api/v1/users/", json=body)
    as_user = await client.post("/api/v1/users/", json=body, headers=alice.headers)
    as_admin = await client.post("/api/v1/users/", json=body, headers=admin_headers)

    assert anonymous.status_code == 403
    assert as_user.status_code == 403
    assert as_admin.status_code == 201
    assert as_admin.json()["data"]["role"] == role


async def test_an_invalid_token_on_registration_is_401_not_anonymous(client):
    body = {"name": "Tok", "email": unique_email(), "password": PASSWORD}

    response = await client.post("/api/v1/users/", json=body, headers=bearer("not.a.token"))

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_self_registration_can_be_closed(settings, admin_headers):
    closed = create_app(settings.model_copy(update={"allow_self_registration": False}))
    body = {"name": "Closed", "email": unique_email(), "password": PASSWORD}
    async with app_client(closed) as client:
        anonymous = await client.post("/api/v1/users/", json=body)
        by_admin = await client.post("/api/v1/users/", json=body, headers=admin_headers)

    assert anonymous.status_code == 403
    assert anonymous.json()["error"] == "registration_closed"
    assert by_admin.status_code == 201


async def test_concurrent_registrations_of_one_email_create_one_account(client):
    body = {"name": "Racer", "email": unique_email("race"), "password": PASSWORD}

    responses = await asyncio.gather(*(client.post("/api/v1/users/", json=body) for _ in range(4)))

    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert {r.json()["error"] for r in responses if r.status_code == 409} == {"email_taken"}
