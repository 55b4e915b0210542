"""A client backend end to end, with the real user_service issuing and the gateway verifying:
create it, exchange its secret for a token, send, read, and revoke it mid-token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest

from gateway.app import create_app as create_gateway
from gateway.config import GatewaySettings
from tests.gateway.test_send import body
from tests.support.isolation import temp_database
from tests.support.servers import AppClient, app_client, live_server
from tests.user_service.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, make_settings
from user_service.app import create_app as create_user_service
from user_service.cli import migrate, seed
from user_service.config import UserSettings


@dataclass
class Platform:
    users: httpx.AsyncClient
    gateway: AppClient
    admin: dict[str, str]


@pytest.fixture
async def platform(gateway_database_url, redis_prefix, amqp_url) -> AsyncIterator[Platform]:
    async with temp_database("users") as users_database:
        await asyncio.to_thread(migrate, users_database)
        settings = make_settings(users_database, redis_prefix)
        await seed(settings)
        async with _running(settings, gateway_database_url, redis_prefix, amqp_url) as platform:
            yield platform


@asynccontextmanager
async def _running(
    settings: UserSettings, gateway_database_url: str, redis_prefix: str, amqp_url: str
) -> AsyncIterator[Platform]:
    async with live_server(create_user_service(settings)) as users_url:
        gateway_settings = GatewaySettings(
            rabbitmq_url=amqp_url,
            redis_key_prefix=redis_prefix,
            user_service_url=users_url,
            database_url=gateway_database_url,
            verify_references=False,
            publish_confirm_timeout_seconds=2,
        )
        async with (
            httpx.AsyncClient(base_url=users_url) as users,
            app_client(create_gateway(gateway_settings)) as gateway,
        ):
            login = await users.post(
                "/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
            )
            admin = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}
            yield Platform(users, gateway, admin)


async def _token(users: httpx.AsyncClient, client_id: str, secret: str) -> httpx.Response:
    return await users.post(
        "/api/v1/auth/token",
        json={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )


async def test_a_client_sends_with_its_own_credentials_until_revoked(platform):
    created = (
        await platform.users.post("/api/v1/clients/", json={"name": "shop"}, headers=platform.admin)
    ).json()["data"]
    exchanged = await _token(platform.users, created["id"], created["client_secret"])
    assert exchanged.status_code == 200, exchanged.text
    as_client = {"Authorization": f"Bearer {exchanged.json()['data']['access_token']}"}

    sent = await platform.gateway.post("/api/v1/notifications/", json=body(), headers=as_client)
    nid = sent.json()["data"]["notification_id"]
    read = await platform.gateway.get(f"/api/v1/notifications/{nid}", headers=as_client)
    revoked = await platform.users.post(
        f"/api/v1/clients/{created['id']}/revoke", headers=platform.admin
    )
    after = await platform.gateway.post("/api/v1/notifications/", json=body(), headers=as_client)
    read_after = await platform.gateway.get(f"/api/v1/notifications/{nid}", headers=as_client)
    renewed = await _token(platform.users, created["id"], created["client_secret"])
    by_admin = await platform.gateway.get(f"/api/v1/notifications/{nid}", headers=platform.admin)

    assert sent.status_code == 202, sent.text
    assert read.status_code == 200
    assert revoked.status_code == 200
    assert after.status_code == read_after.status_code == 401
    assert after.json()["error"] == "token_revoked"
    assert renewed.status_code == 401
    assert by_admin.status_code == 200  # what it sent stays readable to operators
