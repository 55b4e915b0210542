"""Signing keys: created on first start, shared by replicas, rotated and retired safely."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import update
from sqlmodel import col

from libs.http.auth import JWKS_PATH, JwksVerifier
from libs.http.errors import Unauthorized
from libs.storage.db import create_engine, session_factory
from tests.support.servers import app_client, live_server
from tests.user_service.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, login, register
from user_service.app import create_app
from user_service.models import SigningKey

KEYS = "/api/v1/auth/keys"
ME = "/api/v1/users/me"


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def _published(client: httpx.AsyncClient) -> set[str]:
    return {key["kid"] for key in (await client.get(JWKS_PATH)).json()["keys"]}


async def _rotate(client, admin_headers) -> dict[str, Any]:
    response = await client.post(f"{KEYS}/rotate", headers=admin_headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def test_replicas_starting_together_create_one_key(settings):
    apps = [create_app(settings) for _ in range(3)]
    async with app_client(apps[0]) as a, app_client(apps[1]) as b, app_client(apps[2]) as c:
        published = await asyncio.gather(*(_published(client) for client in (a, b, c)))

    assert len(published[0]) == 1
    assert published[0] == published[1] == published[2]


async def test_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(
    client, admin_headers
):
    user = await register(client)
    old_token = await login(client, user["email"])
    old_kid = _kid(old_token)

    new_key = await _rotate(client, admin_headers)
    new_token = await login(client, user["email"])

    assert new_key["status"] == "active"
    assert new_key["kid"] != old_kid
    assert _kid(new_token) == new_key["kid"]
    assert await _published(client) == {old_kid, new_key["kid"]}
    assert (
        await client.get(ME, headers={"Authorization": f"Bearer {old_token}"})
    ).status_code == 200
    assert (
        await client.get(ME, headers={"Authorization": f"Bearer {new_token}"})
    ).status_code == 200


async def test_rotation_schedules_retirement_after_the_last_token_expires(
    client, admin_headers, settings
):
    old_kid = (await client.get(KEYS, headers=admin_headers)).json()["data"][0]["kid"]
    started = datetime.now(UTC)

    await _rotate(client, admin_headers)

    listed = {k["kid"]: k for k in (await client.get(KEYS, headers=admin_headers)).json()["data"]}
    old = listed[old_kid]
    assert old["status"] == "retiring"
    retired_at = datetime.fromisoformat(old["retired_at"])
    lifetime = timedelta(seconds=settings.access_token_ttl_seconds)
    assert started + lifetime <= retired_at <= datetime.now(UTC) + lifetime + timedelta(minutes=5)


async def test_key_listing_never_shows_private_material(client, admin_headers):
    await _rotate(client, admin_headers)

    response = await client.get(KEYS, headers=admin_headers)

    keys = response.json()["data"]
    assert [k["status"] for k in keys] == ["active", "retiring"]
    assert "PRIVATE" not in response.text
    for key in keys:
        assert not {"d", "p", "q"} & set(key["public_jwk"])
        assert set(key) >= {"kid", "status", "created_at", "activated_at", "retired_at"}


async def test_retiring_a_key_removes_it_and_its_tokens(client, admin_headers, settings, app):
    user = await register(client)
    old_token = await login(client, user["email"])
    old_kid = _kid(old_token)
    await _rotate(client, admin_headers)

    async with live_server(create_app(settings)) as base_url, httpx.AsyncClient() as http:
        verifier = JwksVerifier(
            f"{base_url}{JWKS_PATH}",
            http,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            min_refresh_interval=0,
        )
        assert (await verifier.verify(old_token)).sub == user["id"]

        retired = await client.post(f"{KEYS}/{old_kid}/retire", headers=admin_headers)

        assert retired.status_code == 200
        assert retired.json()["data"]["status"] == "retired"
        assert old_kid not in await _published(client)
        # a verifier that has not seen the key yet refuses tokens it signed
        fresh = JwksVerifier(
            f"{base_url}{JWKS_PATH}",
            http,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
        with pytest.raises(Unauthorized) as refused_by_jwks:
            await fresh.verify(old_token)
        assert refused_by_jwks.value.code == "invalid_token"

    refused = await client.get(ME, headers={"Authorization": f"Bearer {old_token}"})
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_token"


async def test_a_replaced_key_retires_itself_once_its_tokens_expired(
    client, admin_headers, migrated_url
):
    old_kid = _kid(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
    await _rotate(client, admin_headers)
    assert old_kid in await _published(client)

    # let the retirement time pass
    engine = create_engine(migrated_url)
    try:
        async with session_factory(engine)() as session:
            await session.exec(
                update(SigningKey)
                .where(col(SigningKey.kid) == old_kid)
                .values(retired_at=datetime.now(UTC) - timedelta(seconds=1))
            )
            await session.commit()
    finally:
        await engine.dispose()

    assert old_kid not in await _published(client)
    # (the admin token from before the rotation was signed by the retired key)
    fresh_admin = {"Authorization": f"Bearer {await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
    listed = {k["kid"]: k for k in (await client.get(KEYS, headers=fresh_admin)).json()["data"]}
    assert listed[old_kid]["status"] == "retired"


async def test_the_active_key_cannot_be_retired_and_unknown_keys_are_404(client, admin_headers):
    active = (await client.get(KEYS, headers=admin_headers)).json()["data"][0]["kid"]

    refused = await client.post(f"{KEYS}/{active}/retire", headers=admin_headers)
    unknown = await client.post(f"{KEYS}/no-such-kid/retire", headers=admin_headers)

    assert refused.status_code == 409
    assert refused.json()["error"] == "key_active"
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "key_not_found"


async def test_retiring_twice_is_harmless(client, admin_headers):
    old = (await client.get(KEYS, headers=admin_headers)).json()["data"][0]["kid"]
    await _rotate(client, admin_headers)
    # retiring the key that signed our own token would log us out: log in again first
    admin = {"Authorization": f"Bearer {await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}

    first = await client.post(f"{KEYS}/{old}/retire", headers=admin)
    second = await client.post(f"{KEYS}/{old}/retire", headers=admin)

    assert first.status_code == second.status_code == 200
    assert second.json()["data"]["retired_at"] == first.json()["data"]["retired_at"]


async def test_replicas_follow_a_rotation_made_elsewhere(settings, admin_headers, client):
    user = await register(client)
    replica = create_app(settings.model_copy(update={"signing_key_cache_seconds": 0.2}))
    async with app_client(replica) as other:
        before = _kid(await login(other, user["email"]))

        new_key = await _rotate(client, admin_headers)  # on the first replica
        token_from_first = await login(client, user["email"])
        await asyncio.sleep(0.3)
        after = _kid(await login(other, user["email"]))

        # the other replica verifies the new key's tokens at once (unknown kid -> reload)
        accepted = await other.get(ME, headers={"Authorization": f"Bearer {token_from_first}"})

    assert before != new_key["kid"]
    assert after == new_key["kid"]
    assert accepted.status_code == 200
