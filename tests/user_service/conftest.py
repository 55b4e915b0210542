"""Fixtures and factories for user_service tests: a migrated database per test, the app
in-process, and helpers that register users and log them in."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.support.servers import AppClient, app_client
from user_service.app import create_app
from user_service.cli import migrate, seed
from user_service.config import UserSettings

PASSWORD = "correct-horse-42"
ADMIN_EMAIL = "admin@herald.local"
ADMIN_PASSWORD = "admin12345!"
SERVICE_EMAIL = "service@herald.local"
SERVICE_PASSWORD = "herald-dev-service-password"

# Cheap hashing and short throttling keep the suite fast; the values are still real argon2id.
FAST = {
    "argon2_time_cost": 1,
    "argon2_memory_kib": 1024,
    "argon2_parallelism": 1,
    "login_slowdown_base_seconds": 0.0,
    "login_slowdown_max_seconds": 0.0,
}


def make_settings(database_url: str, redis_prefix: str, **overrides: Any) -> UserSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_key_prefix": redis_prefix,
        "admin_email": ADMIN_EMAIL,
        "admin_password": ADMIN_PASSWORD,
        "service_account_email": SERVICE_EMAIL,
        "service_account_password": SERVICE_PASSWORD,
        **FAST,
        **overrides,
    }
    return UserSettings(**values)


@pytest.fixture
async def migrated_url(database_url: str) -> str:
    # libs.storage.db.upgrade runs its own event loop, hence a thread.
    await asyncio.to_thread(migrate, database_url)
    return database_url


@pytest.fixture
async def settings(migrated_url: str, redis_prefix: str) -> UserSettings:
    settings = make_settings(migrated_url, redis_prefix)
    await seed(settings)
    return settings


@pytest.fixture
def app(settings: UserSettings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AppClient]:
    async with app_client(app) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unique_email(label: str = "user") -> str:
    return f"{label}.{uuid.uuid4().hex[:10]}@example.com"


async def register(
    client: httpx.AsyncClient, headers: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    """Register a user as the admin, or as ``headers`` say (``{}``: anonymously, which needs
    self-registration on); returns the representation."""
    if headers is None:
        headers = bearer(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
    body = {"name": "Test User", "email": unique_email(), "password": PASSWORD, **fields}
    response = await client.post("/api/v1/users/", json=body, headers=headers)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["access_token"])


@dataclass
class Account:
    id: str
    email: str
    headers: dict[str, str]


async def new_account(client: httpx.AsyncClient, **fields: Any) -> Account:
    user = await register(client, **fields)
    token = await login(client, user["email"])
    return Account(id=user["id"], email=user["email"], headers=bearer(token))


@pytest.fixture
async def admin_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD))


@pytest.fixture
async def service_headers(client: httpx.AsyncClient) -> dict[str, str]:
    return bearer(await login(client, SERVICE_EMAIL, SERVICE_PASSWORD))


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> Account:
    return await new_account(client, name="Alice Doe")


@pytest.fixture
async def bob(client: httpx.AsyncClient) -> Account:
    return await new_account(client, name="Bob Roe")
