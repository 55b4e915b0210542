"""Fixtures for dlq_service: a JWKS server and tokens, a migrated database, the running app."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import jwt
import pytest
from aio_pika.abc import AbstractRobustConnection
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from jwt.algorithms import RSAAlgorithm
from redis.asyncio import Redis

from dlq_service.config import MIGRATIONS_DIR, DlqSettings
from libs.http.auth import JWKS_PATH
from libs.storage.db import upgrade
from libs.storage.redis import Keys
from libs.storage.status_store import RedisStatusStore
from tests.dlq_service.helpers import ADMIN_SUB, Harness, running
from tests.support.servers import live_server

KID = "dlq-test-key"
TokenFactory = Callable[..., str]


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# The accounts the user_service stand-in logs in: email -> (password, role, sub).
ACCOUNTS = {
    "admin@herald.test": ("admin-password-1", "admin", ADMIN_SUB),
    "client@herald.test": ("client-password-1", "service", "client-1"),
}


def mint(
    signing_key: rsa.RSAPrivateKey,
    role: str = "admin",
    *,
    sub: str | None = None,
    kid: str = KID,
    issuer: str | None = None,
    audience: str | None = None,
    expires_in: int = 300,
) -> str:
    """A token as user_service would issue it."""
    defaults = DlqSettings()
    now = int(time.time())
    claims = {
        "sub": sub or f"user-{uuid.uuid4().hex[:8]}",
        "role": role,
        "iat": now,
        "exp": now + expires_in,
        "iss": issuer or defaults.jwt_issuer,
        "aud": audience or defaults.jwt_audience,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, signing_key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture(scope="session")
async def jwks_url(signing_key: rsa.RSAPrivateKey) -> AsyncIterator[str]:
    """A stand-in for user_service's JWKS and login endpoints (user_service is outside this
    package; the browser test logs in at the real one)."""
    jwk: dict[str, Any] = dict(RSAAlgorithm.to_jwk(signing_key.public_key(), as_dict=True))
    jwk.update(kid=KID, alg="RS256", use="sig")
    app = FastAPI()

    @app.get(JWKS_PATH)
    async def jwks() -> dict[str, Any]:
        return {"keys": [jwk]}

    @app.post("/api/v1/auth/login")
    async def login(body: dict[str, Any]) -> JSONResponse:
        account = ACCOUNTS.get(str(body.get("email")))
        if account is None or account[0] != body.get("password"):
            return JSONResponse(
                {"success": False, "error": "invalid_credentials", "message": "no"},
                status_code=401,
            )
        token = mint(signing_key, account[1], sub=account[2])
        return JSONResponse({"success": True, "data": {"access_token": token}})

    async with live_server(app) as url:
        yield url


@pytest.fixture
def token_factory(signing_key: rsa.RSAPrivateKey) -> TokenFactory:
    """Mint a token as user_service would: ``token_factory(role="admin", sub=..., ...)``."""

    def make(role: str = "admin", *, key: rsa.RSAPrivateKey | None = None, **claims: Any) -> str:
        return mint(key or signing_key, role, **claims)

    return make


@pytest.fixture
async def dlq_database_url(database_url: str) -> str:
    """A fresh database with dlq_service's migrations applied."""
    await asyncio.to_thread(upgrade, MIGRATIONS_DIR, database_url)
    return database_url


@pytest.fixture
def settings_factory(
    dlq_database_url: str, amqp_url: str, redis_prefix: str, jwks_url: str
) -> Callable[..., DlqSettings]:
    def make(**overrides: Any) -> DlqSettings:
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": dlq_database_url,
            "rabbitmq_url": amqp_url,
            "redis_key_prefix": redis_prefix,
            "user_service_url": jwks_url,
            "maintenance_interval_seconds": 3600,
            **overrides,
        }
        return DlqSettings(**values)

    return make


@pytest.fixture
def dlq_settings(settings_factory: Callable[..., DlqSettings]) -> DlqSettings:
    return settings_factory()


@pytest.fixture
async def dlq(dlq_settings: DlqSettings, token_factory: TokenFactory) -> AsyncIterator[Harness]:
    """The running app (lifespan included) with an admin token."""
    async with running(dlq_settings, token_factory("admin", sub="admin-alice")) as harness:
        yield harness


@pytest.fixture
async def amqp(amqp_url: str) -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(amqp_url)
    yield connection
    await connection.close()


@pytest.fixture
def statuses(redis: Redis, keys: Keys) -> RedisStatusStore:
    """The status store dlq_service reads (the test's own key prefix)."""
    return RedisStatusStore(redis, keys, 3600)
