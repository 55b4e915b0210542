"""POST /api/v1/users/: who may register what, validation, and that passwords never leak."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel import select

from libs.storage.db import create_engine, session_factory
from tests.support.servers import app_client
from tests.user_service.conftest import (
    PASSWORD,
    bearer,
    login,
    make_settings,
    register,
    unique_email,
)
from user_service.app import create_app
from user_service.cli import seed
from user_service.config import UserSettings
from user_service.models import User


@pytest.fixture
async def settings(migrated_url: str, redis_prefix: str) -> UserSettings:
    """Most cases here are about self-registration: open it."""
    settings = make_settings(migrated_url, redis_prefix, allow_self_registration=True)
    await seed(settings)
    return settings


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


async def test_self_registration_is_closed_by_default(migrated_url, redis_prefix):
    settings = make_settings(migrated_url, redis_prefix)
    await seed(settings)
    body = {"name": "Closed", "email": unique_email(), "password": PASSWORD}
    async with app_client(create_app(settings)) as client:
        admin = bearer(await login(client, settings.admin_email, settings.admin_password))
        user = bearer(await login(client, (await register(client))["email"]))
        anonymous = await client.post("/api/v1/users/", json=body)
        by_a_user = await client.post("/api/v1/users/", json=body, headers=user)
        by_admin = await client.post("/api/v1/users/", json=body, headers=admin)

    assert anonymous.status_code == by_a_user.status_code == 403
    assert anonymous.json()["error"] == by_a_user.json()["error"] == "registration_closed"
    assert by_admin.status_code == 201


async def test_self_registration_is_throttled_per_source_address(settings):
    throttled = settings.model_copy(
        update={"self_registration_burst": 2, "self_registrations_per_hour": 1}
    )

    def body() -> dict[str, str]:
        return {"name": "Many", "email": unique_email("many"), "password": PASSWORD}

    async with app_client(create_app(throttled)) as client:
        admin = bearer(await login(client, settings.admin_email, settings.admin_password))
        burst = [await client.post("/api/v1/users/", json=body()) for _ in range(3)]
        async with client.calling_from("198.51.100.7") as elsewhere:
            other_address = await elsewhere.post("/api/v1/users/", json=body())
        by_admin = await client.post("/api/v1/users/", json=body(), headers=admin)

    assert [r.status_code for r in burst] == [201, 201, 429]
    assert burst[2].json()["error"] == "rate_limited"
    assert int(burst[2].headers["Retry-After"]) > 0
    assert other_address.status_code == 201
    assert by_admin.status_code == 201  # admins are not throttled


async def test_concurrent_registrations_of_one_email_create_one_account(client):
    body = {"name": "Racer", "email": unique_email("race"), "password": PASSWORD}

    responses = await asyncio.gather(*(client.post("/api/v1/users/", json=body) for _ in range(4)))

    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert {r.json()["error"] for r in responses if r.status_code == 409} == {"email_taken"}
