"""Who may call what: every endpoint against every kind of caller, as one table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from template_service.app import create_app
from tests.support.servers import app_client, free_port
from tests.template_service.conftest import (
    TemplateApi,
    TokenFactory,
    bearer,
    make_settings,
    migrate,
)
from tests.template_service.factories import email_template, unique_code

ADMIN_ONLY = frozenset({"admin"})
READERS = frozenset({"admin", "service"})


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str  # {code} is replaced by the test's template code
    allowed: frozenset[str]
    success: int
    body: dict[str, Any] | None = None
    changes_state: bool = False
    needs_template: bool = True

    def url(self, code: str) -> str:
        return self.path.replace("{code}", code)

    def json(self, code: str) -> dict[str, Any] | None:
        if self.body is None:
            return None
        return {
            k: v.replace("{code}", code) if isinstance(v, str) else v for k, v in self.body.items()
        }


ENDPOINTS = [
    Endpoint(
        "create",
        "POST",
        "/api/v1/templates/",
        ADMIN_ONLY,
        201,
        body=email_template("{code}"),
        changes_state=True,
        needs_template=False,
    ),
    Endpoint("list", "GET", "/api/v1/templates/", READERS, 200),
    Endpoint("get", "GET", "/api/v1/templates/{code}", READERS, 200),
    Endpoint(
        "update",
        "PUT",
        "/api/v1/templates/{code}",
        ADMIN_ONLY,
        200,
        body={"subject": "Changed {{ name }}"},
        changes_state=True,
    ),
    Endpoint("versions", "GET", "/api/v1/templates/{code}/versions", READERS, 200),
    Endpoint("version", "GET", "/api/v1/templates/{code}/versions/1", READERS, 200),
    Endpoint(
        "activate",
        "POST",
        "/api/v1/templates/{code}/versions/1/activate",
        ADMIN_ONLY,
        200,
        changes_state=True,
    ),
    Endpoint(
        "render",
        "POST",
        "/api/v1/templates/{code}/render",
        READERS,
        200,
        body={"variables": {"name": "Ana", "link": "https://x.test"}},
    ),
    Endpoint(
        "preview",
        "POST",
        "/api/v1/templates/preview",
        ADMIN_ONLY,
        200,
        body={"type": "push", "content": "Hi {{ name }}", "variables": {"name": "A"}},
        needs_template=False,
    ),
    Endpoint("delete", "DELETE", "/api/v1/templates/{code}", ADMIN_ONLY, 200, changes_state=True),
]

# caller -> (status, error) when the caller is refused whatever the endpoint
CALLERS = ["admin", "service", "user", "anonymous", "expired", "forged", "wrong_audience"]
REFUSED = {
    "anonymous": (401, "missing_token"),
    "expired": (401, "token_expired"),
    "forged": (401, "invalid_token"),
    "wrong_audience": (401, "invalid_token"),
}


def _headers(caller: str, tokens: TokenFactory, other_key: rsa.RSAPrivateKey) -> dict[str, str]:
    if caller == "anonymous":
        return {}
    if caller == "expired":
        return bearer(tokens("admin", expires_in=-120))
    if caller == "forged":  # same kid, signed with a key user_service never published
        return bearer(tokens("admin", key=other_key))
    if caller == "wrong_audience":
        return bearer(tokens("admin", audience="someone-else"))
    return bearer(tokens(caller))


def _expected(endpoint: Endpoint, caller: str) -> tuple[int, str | None]:
    if caller in REFUSED:
        return REFUSED[caller]
    if caller in endpoint.allowed:
        return endpoint.success, None
    return 403, "forbidden"


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
async def test_access_matrix(
    shared_api: TemplateApi,
    token_factory: TokenFactory,
    other_key: rsa.RSAPrivateKey,
    endpoint: Endpoint,
    caller: str,
) -> None:
    code = unique_code("acl")
    if endpoint.needs_template:
        await shared_api.create(email_template(code))
    status, error = _expected(endpoint, caller)

    response = await shared_api.client.request(
        endpoint.method,
        endpoint.url(code),
        json=endpoint.json(code),
        headers=_headers(caller, token_factory, other_key),
    )

    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is (error is None)
    assert body["error"] == error
    if status == 401:
        assert body["data"] is None
    if error is not None and endpoint.changes_state:
        # a refused change changed nothing
        current = await shared_api.request("GET", f"/api/v1/templates/{code}")
        if endpoint.needs_template:
            assert current.status_code == 200
            assert current.json()["data"]["version"] == 1
            assert current.json()["data"]["subject"] == email_template()["subject"]
        else:
            assert current.status_code == 404


async def test_missing_token_asks_for_bearer_auth(shared_api: TemplateApi) -> None:
    response = await shared_api.request("GET", "/api/v1/templates/", role=None)
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization", ["Bearer", "Bearer not.a.jwt", "Basic dXNlcjpwYXNz", "Bearer " + "a" * 5000]
)
async def test_malformed_authorization_is_401(shared_api: TemplateApi, authorization: str) -> None:
    response = await shared_api.client.get(
        "/api/v1/templates/", headers={"Authorization": authorization}
    )
    assert response.status_code == 401
    assert response.json()["success"] is False


async def test_a_token_with_an_unknown_role_is_401(
    shared_api: TemplateApi, token_factory: TokenFactory
) -> None:
    response = await shared_api.client.get(
        "/api/v1/templates/", headers=bearer(token_factory("superuser"))
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


async def test_unreachable_key_server_is_503_not_500(
    database_url: str, redis_prefix: str, token_factory: TokenFactory
) -> None:
    await migrate(database_url)
    settings = make_settings(database_url, redis_prefix, f"http://127.0.0.1:{free_port()}")

    async with app_client(create_app(settings)) as client:
        response = await client.get("/api/v1/templates/", headers=bearer(token_factory("admin")))

    assert response.status_code == 503
    assert response.json()["error"] == "auth_unavailable"
