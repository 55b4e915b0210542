"""Who may call what: every endpoint against every kind of caller, as one table.

The cases share one app and database, created for this module and dropped after it (a fresh
database per case would triple the suite's run time). Each case makes its own users, device and
tokens, so no case depends on another.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.isolation import temp_database, temp_redis_prefix
from tests.support.servers import app_client
from tests.user_service.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    PASSWORD,
    SERVICE_EMAIL,
    SERVICE_PASSWORD,
    bearer,
    login,
    make_settings,
    new_account,
)
from user_service.app import create_app
from user_service.cli import migrate, seed

ACTORS = ("admin", "service", "self", "other", "anonymous", "client")

# endpoint name, method, path, body; expected status for admin, service, self, other, anonymous,
# client (a client backend's token: it is no account, so "read me" finds none).
# {user_id} is the "self" user; {token_id} one of their devices; {kid} a replaced signing key;
# {client_id} another client backend.
TABLE: list[tuple[str, str, str, dict[str, Any] | None, tuple[int, int, int, int, int, int]]] = [
    # self-registration is off (the default): only admins create accounts
    ("register user", "POST", "/api/v1/users/", {"role": "user"}, (201, 403, 403, 403, 403, 403)),
    ("register admin", "POST", "/api/v1/users/", {"role": "admin"}, (201, 403, 403, 403, 403, 403)),
    (
        "register service",
        "POST",
        "/api/v1/users/",
        {"role": "service"},
        (201, 403, 403, 403, 403, 403),
    ),
    ("list users", "GET", "/api/v1/users/", None, (200, 403, 403, 403, 401, 403)),
    (
        "look users up",
        "POST",
        "/api/v1/users/lookup",
        {"ids": "self"},
        (200, 200, 403, 403, 401, 403),
    ),
    ("read me", "GET", "/api/v1/users/me", None, (200, 200, 200, 200, 401, 404)),
    ("read user", "GET", "/api/v1/users/{user_id}", None, (200, 200, 200, 403, 401, 403)),
    (
        "update user",
        "PATCH",
        "/api/v1/users/{user_id}",
        {"name": "Renamed"},
        (200, 403, 200, 403, 401, 403),
    ),
    ("delete user", "DELETE", "/api/v1/users/{user_id}", None, (200, 403, 200, 403, 401, 403)),
    (
        "read preferences",
        "GET",
        "/api/v1/users/{user_id}/preferences",
        None,
        (200, 200, 200, 403, 401, 403),
    ),
    (
        "update preferences",
        "PATCH",
        "/api/v1/users/{user_id}/preferences",
        {"push": False},
        (200, 403, 200, 403, 401, 403),
    ),
    (
        "list devices",
        "GET",
        "/api/v1/users/{user_id}/push-tokens",
        None,
        (200, 200, 200, 403, 401, 403),
    ),
    (
        "add device",
        "POST",
        "/api/v1/users/{user_id}/push-tokens",
        {"token": "new-device"},
        (201, 403, 201, 403, 401, 403),
    ),
    (
        "remove device",
        "DELETE",
        "/api/v1/users/{user_id}/push-tokens/{token_id}",
        None,
        (200, 403, 200, 403, 401, 403),
    ),
    (
        "invalidate device",
        "POST",
        "/api/v1/users/{user_id}/push-tokens/invalidate",
        {"token": "existing-device", "reason": "UNREGISTERED"},
        (200, 200, 403, 403, 401, 403),
    ),
    ("list keys", "GET", "/api/v1/auth/keys", None, (200, 403, 403, 403, 401, 403)),
    ("rotate key", "POST", "/api/v1/auth/keys/rotate", None, (201, 403, 403, 403, 401, 403)),
    ("retire key", "POST", "/api/v1/auth/keys/{kid}/retire", None, (200, 403, 403, 403, 401, 403)),
    ("jwks", "GET", "/.well-known/jwks.json", None, (200, 200, 200, 200, 200, 200)),
    ("create client", "POST", "/api/v1/clients/", {"name": "New"}, (201, 403, 403, 403, 401, 403)),
    ("list clients", "GET", "/api/v1/clients/", None, (200, 403, 403, 403, 401, 403)),
    ("read client", "GET", "/api/v1/clients/{client_id}", None, (200, 403, 403, 403, 401, 403)),
    (
        "revoke client",
        "POST",
        "/api/v1/clients/{client_id}/revoke",
        None,
        (200, 403, 403, 403, 401, 403),
    ),
]

CASES = [
    pytest.param(method, path, body, actor, expected[i], id=f"{name}-{actor}")
    for name, method, path, body, expected in TABLE
    for i, actor in enumerate(ACTORS)
]


def _body(template: dict[str, Any] | None, device: str, me: str) -> dict[str, Any] | None:
    if template is None:
        return None
    body = dict(template)
    if body.get("ids") == "self":
        body["ids"] = [me]
    if "role" in body:  # a registration
        body.update(
            name="New Person", email=f"new.{uuid.uuid4().hex[:10]}@example.com", password=PASSWORD
        )
    if body.get("token") == "existing-device":
        body["token"] = device
    elif body.get("token") == "new-device":
        body["token"] = f"device-{uuid.uuid4().hex}"
    return body


async def _client_backend(client: httpx.AsyncClient, admin: dict[str, str]) -> dict[str, Any]:
    created = (await client.post("/api/v1/clients/", json={"name": "B"}, headers=admin)).json()
    token = await client.post(
        "/api/v1/auth/token",
        json={
            "grant_type": "client_credentials",
            "client_id": created["data"]["id"],
            "client_secret": created["data"]["client_secret"],
        },
    )
    return {"id": created["data"]["id"], "headers": bearer(token.json()["data"]["access_token"])}


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with temp_database("access") as url, temp_redis_prefix("access") as prefix:
        await asyncio.to_thread(migrate, url)
        settings = make_settings(url, prefix)
        await seed(settings)
        async with app_client(create_app(settings)) as client:
            yield client


@pytest.mark.parametrize(("method", "path", "body", "actor", "expected"), CASES)
async def test_access(client, method, path, body, actor, expected):
    admin_headers = bearer(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
    service_headers = bearer(await login(client, SERVICE_EMAIL, SERVICE_PASSWORD))
    me = await new_account(client, name="Self Person")
    other = await new_account(client, name="Other Person")
    device = f"device-{uuid.uuid4().hex}"
    added = await client.post(
        f"/api/v1/users/{me.id}/push-tokens", json={"token": device}, headers=admin_headers
    )
    kid = ""
    if "{kid}" in path:
        keys = (await client.get("/api/v1/auth/keys", headers=admin_headers)).json()["data"]
        kid = keys[0]["kid"]
        await client.post("/api/v1/auth/keys/rotate", headers=admin_headers)
    backend = await _client_backend(client, admin_headers)
    headers = {
        "admin": admin_headers,
        "service": service_headers,
        "self": me.headers,
        "other": other.headers,
        "anonymous": {},
        "client": backend["headers"],
    }[actor]
    url = path.format(
        user_id=me.id, token_id=added.json()["data"]["id"], kid=kid, client_id=backend["id"]
    )

    response = await client.request(method, url, json=_body(body, device, me.id), headers=headers)

    assert response.status_code == expected, response.text
    payload = response.json()
    assert payload["success"] is (expected < 400)
    if expected == 401:
        assert payload["error"] == "missing_token"
    if expected == 403:
        closed = body == {"role": "user"}
        assert payload["error"] == ("registration_closed" if closed else "forbidden")
