"""Fixtures for template_service tests.

Auth (generic, copy it for other services): an RSA key made here, its JWKS served by a tiny app on a
real port standing in for user_service, and ``token_factory`` minting RS256 tokens with the claims
user_service issues (sub, role, exp, iat, iss, aud, jti). Point ``user_service_url`` at
``auth_server``.

App: ``app``/``client`` run template_service in-process (lifespan included) on a fresh, migrated
database and its own Redis key prefix; ``api`` wraps the client with per-role headers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jwt.algorithms import RSAAlgorithm

from libs.http.auth import ALGORITHM, JWKS_PATH
from libs.settings import ServiceSettings
from libs.storage.db import upgrade
from template_service.app import create_app
from template_service.config import TemplateSettings
from tests.support.isolation import REDIS_URL, temp_database, temp_redis_prefix
from tests.support.servers import AppClient, app_client, live_server

MIGRATIONS = Path(__file__).resolve().parents[2] / "template_service" / "migrations"
ISSUER = ServiceSettings.model_fields["jwt_issuer"].default
AUDIENCE = ServiceSettings.model_fields["jwt_audience"].default
KEY_ID = "test-signing-key"


# ---------------------------------------------------------------------------------------------
# Auth: a stand-in for user_service's JWKS and tokens signed with its key


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    """A key the JWKS does not publish (tokens signed with it must be refused)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks_document(key: rsa.RSAPrivateKey, kid: str = KEY_ID) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    return {"keys": [jwk]}


@pytest.fixture(scope="session")
async def auth_server(signing_key: rsa.RSAPrivateKey) -> AsyncIterator[str]:
    """Base URL of a server publishing the JWKS at ``/.well-known/jwks.json``."""
    app = FastAPI()
    document = jwks_document(signing_key)

    @app.get(JWKS_PATH)
    async def jwks() -> dict[str, Any]:
        return document

    async with live_server(app) as url:
        yield url


class TokenFactory(Protocol):
    def __call__(
        self,
        role: str = "admin",
        *,
        sub: str | None = None,
        expires_in: int = 600,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        key: rsa.RSAPrivateKey | None = None,
        kid: str = KEY_ID,
        **claims: Any,
    ) -> str: ...


@pytest.fixture(scope="session")
def token_factory(signing_key: rsa.RSAPrivateKey) -> TokenFactory:
    """``token_factory("service")``; ``expires_in=-60`` gives an expired token."""

    def make(
        role: str = "admin",
        *,
        sub: str | None = None,
        expires_in: int = 600,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        key: rsa.RSAPrivateKey | None = None,
        kid: str = KEY_ID,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {
            "sub": sub or f"{role}-{uuid.uuid4().hex[:8]}",
            "role": role,
            "iat": now,
            "exp": now + expires_in,
            "iss": issuer,
            "aud": audience,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(payload, key or signing_key, algorithm=ALGORITHM, headers={"kid": kid})

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ---------------------------------------------------------------------------------------------
# The service under test


def make_settings(database_url: str, redis_prefix: str, user_service_url: str) -> TemplateSettings:
    return TemplateSettings(
        environment="test",
        database_url=database_url,
        redis_url=REDIS_URL,
        redis_key_prefix=redis_prefix,
        user_service_url=user_service_url,
    )


async def migrate(database_url: str) -> None:
    # alembic's env.py runs its own event loop, so it cannot run on the test's loop
    await asyncio.to_thread(upgrade, MIGRATIONS, database_url)


@pytest.fixture
async def settings(database_url: str, redis_prefix: str, auth_server: str) -> TemplateSettings:
    await migrate(database_url)
    return make_settings(database_url, redis_prefix, auth_server)


@pytest.fixture
def app(settings: TemplateSettings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AppClient]:
    async with app_client(app) as client:
        yield client


@dataclass
class TemplateApi:
    """The HTTP API with a token per role (``role=None``: no token)."""

    client: httpx.AsyncClient
    tokens: TokenFactory

    def headers(self, role: str | None) -> dict[str, str]:
        return bearer(self.tokens(role)) if role else {}

    async def request(
        self, method: str, path: str, role: str | None = "admin", **kwargs: Any
    ) -> httpx.Response:
        headers = {**self.headers(role), **kwargs.pop("headers", {})}
        return await self.client.request(method, path, headers=headers, **kwargs)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.request("POST", "/api/v1/templates/", json=body)
        assert response.status_code == 201, response.text
        return response.json()["data"]  # type: ignore[no-any-return]

    async def update(
        self, code: str, body: dict[str, Any], language: str | None = None
    ) -> dict[str, Any]:
        params = {"language": language} if language else {}
        response = await self.request("PUT", f"/api/v1/templates/{code}", json=body, params=params)
        assert response.status_code == 200, response.text
        return response.json()["data"]  # type: ignore[no-any-return]

    async def render(
        self, code: str, variables: dict[str, Any], role: str = "service", **extra: Any
    ) -> httpx.Response:
        body = {"variables": variables, **extra}
        return await self.request("POST", f"/api/v1/templates/{code}/render", role, json=body)

    async def preview(self, body: dict[str, Any]) -> httpx.Response:
        return await self.request("POST", "/api/v1/templates/preview", json=body)


@pytest.fixture
def api(client: httpx.AsyncClient, token_factory: TokenFactory) -> TemplateApi:
    return TemplateApi(client, token_factory)


@pytest.fixture(scope="module")
async def shared_api(auth_server: str, token_factory: TokenFactory) -> AsyncIterator[TemplateApi]:
    """One app and database for a whole module (creating a database costs ~0.3 s).

    For tests that do not depend on what else is stored: they use their own codes
    (``factories.unique_code``) and never list or count.
    """
    async with temp_database("tpl") as url, temp_redis_prefix() as prefix:
        await migrate(url)
        async with app_client(create_app(make_settings(url, prefix, auth_server))) as client:
            yield TemplateApi(client, token_factory)
