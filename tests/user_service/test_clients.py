"""Client backends: admins create and revoke them; each exchanges its own id and secret for a
short-lived ``client`` token, which reads no user."""

from __future__ import annotations

import uuid
from typing import Any

import jwt
import pytest
from sqlmodel import select

from libs.storage.db import create_engine, session_factory
from libs.storage.redis import Keys
from tests.user_service.conftest import bearer, new_account, register
from user_service.models import Client

CLIENTS = "/api/v1/clients/"
TOKEN = "/api/v1/auth/token"


async def _create(client, admin_headers, name: str = "Shop backend") -> dict[str, Any]:
    response = await client.post(CLIENTS, json={"name": name}, headers=admin_headers)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


async def _exchange(http, client_id: str, secret: str):
    return await http.post(
        TOKEN,
        json={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )


async def _client_headers(client, admin_headers) -> tuple[dict[str, Any], dict[str, str]]:
    created = await _create(client, admin_headers)
    response = await _exchange(client, created["id"], created["client_secret"])
    assert response.status_code == 200, response.text
    return created, bearer(response.json()["data"]["access_token"])


async def test_the_secret_is_shown_once_and_stored_only_as_an_argon2id_hash(
    client, admin_headers, settings, capsys
):
    created = await _create(client, admin_headers)
    secret = created["client_secret"]
    listed = await client.get(CLIENTS, headers=admin_headers)
    read = await client.get(f"{CLIENTS}{created['id']}", headers=admin_headers)

    assert secret.startswith("hcs_")
    assert len(secret) > 40
    assert set(created) == {
        "id",
        "name",
        "created_by",
        "created_at",
        "last_token_at",
        "revoked_at",
        "client_secret",
    }
    assert [c["id"] for c in listed.json()["data"]] == [created["id"]]
    assert listed.json()["meta"]["total"] == 1
    assert secret not in listed.text
    assert secret not in read.text
    assert "client_secret" not in read.json()["data"]
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            stored = (
                await session.exec(select(Client).where(Client.id == uuid.UUID(created["id"])))
            ).one()
    finally:
        await engine.dispose()
    assert stored.secret_hash.startswith("$argon2id$")
    assert secret not in stored.secret_hash
    await _exchange(client, created["id"], secret)
    await _exchange(client, created["id"], secret + "x")
    logged = capsys.readouterr()
    assert secret not in logged.out + logged.err


async def test_the_client_credentials_grant_issues_a_short_lived_client_token(
    client, admin_headers, settings
):
    created = await _create(client, admin_headers)

    response = await _exchange(client, created["id"], created["client_secret"])

    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["token_type"] == "bearer"
    assert data["expires_in"] == settings.client_token_ttl_seconds
    claims = jwt.decode(data["access_token"], options={"verify_signature": False})
    assert claims["role"] == "client"
    assert claims["sub"] == created["id"]
    assert claims["exp"] - claims["iat"] == settings.client_token_ttl_seconds
    read = await client.get(f"{CLIENTS}{created['id']}", headers=admin_headers)
    assert read.json()["data"]["last_token_at"] is not None


@pytest.mark.parametrize("case", ["wrong secret", "unknown client", "revoked client"])
async def test_bad_client_credentials_get_one_uniform_401(client, admin_headers, case):
    created = await _create(client, admin_headers)
    client_id, secret = created["id"], created["client_secret"]
    if case == "wrong secret":
        secret = secret[:-2] + "xx"
    elif case == "unknown client":
        client_id = str(uuid.uuid4())
    else:
        assert (
            await client.post(f"{CLIENTS}{client_id}/revoke", headers=admin_headers)
        ).status_code == 200

    response = await _exchange(client, client_id, secret)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.json()["message"] == "Unknown client, revoked client or wrong secret."


async def test_revoking_blocks_new_tokens_and_tells_the_gateway(
    client, admin_headers, settings, redis
):
    created = await _create(client, admin_headers)

    first = await client.post(f"{CLIENTS}{created['id']}/revoke", headers=admin_headers)
    again = await client.post(f"{CLIENTS}{created['id']}/revoke", headers=admin_headers)
    exchange = await _exchange(client, created["id"], created["client_secret"])
    live = await client.get(CLIENTS, params={"revoked": "false"}, headers=admin_headers)

    assert first.status_code == again.status_code == 200
    assert first.json()["data"]["revoked_at"] is not None
    assert again.json()["data"]["revoked_at"] == first.json()["data"]["revoked_at"]
    assert exchange.status_code == 401
    assert created["id"] not in [c["id"] for c in live.json()["data"]]
    ttl = await redis.ttl(Keys(settings.redis_key_prefix).revoked_client(created["id"]))
    assert settings.client_token_ttl_seconds < ttl <= settings.client_token_ttl_seconds + 60


async def test_failed_exchanges_lock_a_client_only_for_the_failing_address(client, admin_headers):
    created = await _create(client, admin_headers)
    async with client.calling_from("203.0.113.50") as stranger:
        guesses = [await _exchange(stranger, created["id"], "hcs_guess") for _ in range(6)]

        owner = await _exchange(client, created["id"], created["client_secret"])

    assert [r.status_code for r in guesses] == [401] * 5 + [429]
    assert owner.status_code == 200


async def test_a_client_token_reads_no_user_nor_device(client, admin_headers):
    _, as_client = await _client_headers(client, admin_headers)
    user = await register(client, push_token=f"device-{uuid.uuid4().hex}")
    paths = [
        "/api/v1/users/",
        f"/api/v1/users/{user['id']}",
        f"/api/v1/users/{user['id']}/preferences",
        f"/api/v1/users/{user['id']}/push-tokens",
    ]

    responses = [await client.get(path, headers=as_client) for path in paths]

    assert [r.status_code for r in responses] == [403] * 4
    assert all(user["email"] not in r.text for r in responses)


async def test_a_client_cannot_use_its_own_id_as_a_user_id(client, admin_headers):
    created, as_client = await _client_headers(client, admin_headers)

    response = await client.get(f"/api/v1/users/{created['id']}", headers=as_client)

    assert response.status_code == 403


@pytest.mark.parametrize("actor", ["user", "service", "client"])
async def test_only_admins_manage_clients(client, admin_headers, service_headers, actor):
    headers = {
        "user": (await new_account(client)).headers,
        "service": service_headers,
        "client": (await _client_headers(client, admin_headers))[1],
    }[actor]

    created = await client.post(CLIENTS, json={"name": "Rogue"}, headers=headers)
    listed = await client.get(CLIENTS, headers=headers)

    assert created.status_code == listed.status_code == 403


async def test_client_is_not_a_role_for_user_accounts(client, admin_headers, alice):
    body = {
        "name": "C",
        "email": f"c.{uuid.uuid4().hex[:8]}@example.com",
        "password": "pw-12345678",
    }

    created = await client.post(
        "/api/v1/users/", json=body | {"role": "client"}, headers=admin_headers
    )
    promoted = await client.patch(
        f"/api/v1/users/{alice.id}", json={"role": "client"}, headers=admin_headers
    )

    assert created.status_code == promoted.status_code == 422
    assert created.json()["data"]["errors"][0]["field"] == "role"
