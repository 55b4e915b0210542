"""Only admins reach the failed-message API: 401 without a valid token, 403 for other roles."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.dlq_service.helpers import Harness, failure_headers, incoming, notification

ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/v1/failed/", None),
    ("GET", "/api/v1/failed/stats", None),
    ("GET", "/api/v1/failed/{id}", None),
    ("POST", "/api/v1/failed/{id}/republish", None),
    ("POST", "/api/v1/failed/{id}/discard", {"reason": "no"}),
    ("POST", "/api/v1/failed/republish", {"filter": {}}),
]


async def _call(
    dlq: Harness, method: str, path: str, body: object, headers: dict[str, str]
) -> httpx.Response:
    return await dlq.client.request(method, path, json=body, headers=headers)


@pytest.fixture
async def failed_id(dlq: Harness) -> str:
    await dlq.service.store(incoming(notification(), failure_headers()))
    return str((await dlq.only_row())["id"])


async def test_missing_token_is_401_on_every_route(dlq: Harness, failed_id: str) -> None:
    for method, path, body in ROUTES:
        response = await _call(dlq, method, path.format(id=failed_id), body, {})
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"] == "missing_token"
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("role", ["user", "service"])
async def test_non_admin_roles_get_403_and_change_nothing(
    dlq: Harness, failed_id: str, token_factory: Callable[..., str], role: str
) -> None:
    token = token_factory(role)
    for method, path, body in ROUTES:
        response = await _call(dlq, method, path.format(id=failed_id), body, dlq.auth(token))
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"] == "forbidden"
    row = await dlq.only_row()
    assert row["state"] == "pending"
    assert row["republish_count"] == 0


async def test_invalid_tokens_are_401(dlq: Harness, token_factory: Callable[..., str]) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "wrong signature": (token_factory("admin", key=stranger), "invalid_token"),
        "unknown key id": (token_factory("admin", kid="rotated-away"), "invalid_token"),
        "wrong audience": (token_factory("admin", audience="someone-else"), "invalid_token"),
        "wrong issuer": (token_factory("admin", issuer="evil"), "invalid_token"),
        "expired": (token_factory("admin", expires_in=-60), "token_expired"),
        "garbage": ("not.a.token", "invalid_token"),
    }
    for name, (token, code) in cases.items():
        response = await dlq.client.get("/api/v1/failed/", headers=dlq.auth(token))
        assert response.status_code == 401, (name, response.text)
        assert response.json()["error"] == code, name


async def test_admin_token_is_accepted(dlq: Harness, token_factory: Callable[..., str]) -> None:
    response = await dlq.client.get(
        "/api/v1/failed/", headers=dlq.auth(token_factory("admin", sub=str(uuid.uuid4())))
    )
    assert response.status_code == 200
    assert response.json() == {
        "success": True,
        "data": [],
        "error": None,
        "message": None,
        "meta": {
            "total": 0,
            "limit": 20,
            "page": 1,
            "total_pages": 0,
            "has_next": False,
            "has_previous": False,
        },
    }
