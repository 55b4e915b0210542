"""The service as an operator sees it: settings, probes, docs, and errors in the envelope."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tests.support.servers import app_client
from tests.user_service.conftest import make_settings
from user_service.app import create_app
from user_service.config import UserSettings


async def test_health_and_readiness(client):
    health = await client.get("/health")
    ready = await client.get("/ready")

    assert health.status_code == 200
    assert health.json()["data"]["service"] == "user_service"
    assert ready.status_code == 200
    assert ready.json()["data"]["checks"] == {
        "postgres": {"status": "ok"},
        "redis": {"status": "ok"},
    }


async def test_without_a_database_the_service_starts_but_is_not_ready(redis_prefix):
    settings = make_settings("postgresql+asyncpg://postgres@127.0.0.1:1/none", redis_prefix)
    async with app_client(create_app(settings)) as client:
        health = await client.get("/health")
        ready = await client.get("/ready")
        jwks = await client.get("/.well-known/jwks.json")

    assert health.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["data"]["checks"]["postgres"]["status"] == "down"
    assert ready.json()["data"]["checks"]["redis"]["status"] == "ok"
    assert jwks.status_code == 503
    assert jwks.json()["error"] == "service_unavailable"
    assert jwks.headers["Retry-After"] == "5"


async def test_every_route_is_documented(client):
    spec = (await client.get("/openapi.json")).json()

    operations = [
        (path, method, operation)
        for path, item in spec["paths"].items()
        if path.startswith(("/api/v1/", "/.well-known/"))
        for method, operation in item.items()
    ]
    assert len(operations) == 23
    for path, method, operation in operations:
        assert operation.get("summary"), (path, method)
        success = next(code for code in operation["responses"] if code.startswith("2"))
        schema = operation["responses"][success]["content"]["application/json"]["schema"]
        assert "$ref" in schema, (path, method)
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


async def test_unknown_routes_methods_and_huge_bodies_use_the_envelope(client):
    missing = await client.get("/api/v1/nothing")
    wrong_method = await client.put("/api/v1/auth/login")
    huge = await client.post("/api/v1/users/", content=b"x" * 70_000)

    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["error"]) == (405, "method_not_allowed")
    assert (huge.status_code, huge.json()["error"]) == (413, "payload_too_large")


async def test_correlation_id_is_echoed(client):
    response = await client.get("/health", headers={"X-Correlation-ID": "abc-123"})

    assert response.headers["X-Correlation-ID"] == "abc-123"


def test_settings_read_the_documented_variables(monkeypatch):
    monkeypatch.setenv("USER_SERVICE_PORT", "9101")
    monkeypatch.setenv("USER_DATABASE_URL", "postgresql+asyncpg://u@h:5432/users_db")
    monkeypatch.setenv("ACCESS_TOKEN_TTL_SECONDS", "600")

    settings = UserSettings()

    assert settings.port == 9101
    assert settings.database_url.endswith("/users_db")
    assert settings.access_token_ttl_seconds == 600
    assert settings.service_name == "user_service"


def test_generic_variables_are_the_fallback(monkeypatch):
    monkeypatch.delenv("USER_SERVICE_PORT", raising=False)
    monkeypatch.delenv("USER_DATABASE_URL", raising=False)
    monkeypatch.setenv("PORT", "9102")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u@h:5432/other")

    settings = UserSettings()

    assert settings.port == 9102
    assert settings.database_url.endswith("/other")


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"admin_password": "admin12345!"}, "ADMIN_PASSWORD"),
        ({"admin_email": "admin@herald.local"}, "ADMIN_EMAIL"),
        ({"service_account_password": "herald-dev-service-password"}, "SERVICE_ACCOUNT_PASSWORD"),
        ({"metrics_token": "change-me"}, "METRICS_TOKEN"),
        ({"metrics_token": None}, "METRICS_TOKEN"),
    ],
)
def test_production_refuses_development_credentials(overrides, variable):
    values = {
        "environment": "production",
        "admin_email": "ops@example.com",
        "admin_password": "a-real-secret-9",
        "service_account_password": "another-real-secret-8",
        "metrics_token": "a-real-metrics-token-7",
        **overrides,
    }

    with pytest.raises(ValidationError, match=variable):
        UserSettings(**values)

    assert UserSettings(**{**values, **{k: f"real-{k}-1@example.com" for k in overrides}})


def test_production_refuses_a_guessable_service_password():
    values: dict[str, Any] = {
        "environment": "production",
        "admin_email": "ops@example.com",
        "admin_password": "a-real-secret-9",
        "metrics_token": "a-real-metrics-token-7",
    }

    with pytest.raises(ValidationError, match="SERVICE_ACCOUNT_PASSWORD"):
        UserSettings(**values, service_account_password="short-secret-1")

    assert UserSettings(**values, service_account_password="a-long-random-secret-42")
