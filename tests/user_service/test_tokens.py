"""Issued tokens: claims, JWKS, verification by other services, and rejection of bad tokens."""

from __future__ import annotations

import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from libs.http.auth import JWKS_PATH, JwksVerifier, Role, decode_token, principal_from_claims
from tests.support.servers import live_server
from tests.user_service.conftest import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    SERVICE_EMAIL,
    SERVICE_PASSWORD,
    bearer,
    login,
    register,
)
from user_service.app import create_app

ME = "/api/v1/users/me"


def _verifier(base_url: str, http: httpx.AsyncClient, settings) -> JwksVerifier:
    return JwksVerifier(
        f"{base_url}{JWKS_PATH}",
        http,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        min_refresh_interval=0,
    )


async def test_jwks_is_an_envelope_with_keys_at_the_top_level(client):
    response = await client.get(JWKS_PATH)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "data", "error", "message", "meta", "keys"}
    assert body["success"] is True
    assert body["keys"] == body["data"]["keys"]
    assert len(body["keys"]) == 1
    key = body["keys"][0]
    assert {"kty", "n", "e", "kid", "use", "alg"} <= set(key)
    assert (key["kty"], key["use"], key["alg"]) == ("RSA", "sig", "RS256")
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)  # no private material
    jwt.PyJWKSet.from_dict(body)  # what libs.http.auth.JwksVerifier does with the body


async def test_token_claims_verify_against_the_published_keys(client, settings):
    user = await register(client)
    before = int(time.time())
    token = await login(client, user["email"])

    jwks = (await client.get(JWKS_PATH)).json()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] in {key["kid"] for key in jwks["keys"]}
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]].key
    claims = decode_token(token, key, issuer=settings.jwt_issuer, audience=settings.jwt_audience)
    assert claims["sub"] == user["id"]
    assert claims["role"] == "user"
    assert claims["iss"] == settings.jwt_issuer
    assert claims["aud"] == settings.jwt_audience
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl_seconds
    assert before - 1 <= claims["iat"] <= int(time.time()) + 1
    assert len(claims["jti"]) == 32
    int(claims["jti"], 16)
    assert principal_from_claims(claims).role is Role.USER


async def test_each_token_has_its_own_jti(client):
    user = await register(client)

    first = jwt.decode(await login(client, user["email"]), options={"verify_signature": False})
    second = jwt.decode(await login(client, user["email"]), options={"verify_signature": False})

    assert first["jti"] != second["jti"]


async def test_other_services_verify_every_role_with_the_jwks_over_http(settings):
    app = create_app(settings)
    async with live_server(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        user = await register(http)
        tokens = {
            Role.USER: await login(http, user["email"]),
            Role.ADMIN: await login(http, ADMIN_EMAIL, ADMIN_PASSWORD),
            Role.SERVICE: await login(http, SERVICE_EMAIL, SERVICE_PASSWORD),
        }
        verifier = _verifier(base_url, http, settings)

        principals = {role: await verifier.verify(token) for role, token in tokens.items()}

    assert {role: p.role for role, p in principals.items()} == {r: r for r in tokens}
    assert principals[Role.USER].sub == user["id"]


async def _signed(client, settings, **overrides) -> str:
    key = await client.state.signing_keys.active_key()
    now = int(time.time())
    claims = {
        "sub": str(uuid.uuid4()),
        "role": "admin",
        "iat": now,
        "exp": now + 60,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": uuid.uuid4().hex,
        **overrides,
    }
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(claims, key.private_key, algorithm="RS256", headers={"kid": key.kid})


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"exp": int(time.time()) - 3600}, "token_expired"),
        ({"aud": "someone-else"}, "invalid_token"),
        ({"iss": "someone-else"}, "invalid_token"),
        ({"jti": None}, "invalid_token"),
        ({"role": "root"}, "invalid_token"),
        ({"sub": ""}, "invalid_token"),  # it would match "no owner" filters
    ],
)
async def test_bad_claims_are_401(client, settings, overrides, code):
    token = await _signed(client, settings, **overrides)

    response = await client.get("/api/v1/auth/keys", headers=bearer(token))

    assert response.status_code == 401
    assert response.json()["error"] == code


async def test_a_token_signed_by_another_key_is_401(client, settings):
    kid = (await client.state.signing_keys.active_key()).kid
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "sub": "x",
        "role": "admin",
        "iat": now,
        "exp": now + 60,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": uuid.uuid4().hex,
    }
    forged = jwt.encode(claims, forger, algorithm="RS256", headers={"kid": kid})
    unknown_kid = jwt.encode(claims, forger, algorithm="RS256", headers={"kid": "nope"})

    for token in (forged, unknown_kid):
        response = await client.get(ME, headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"


async def test_unsigned_and_malformed_tokens_are_401(client, settings):
    unsigned = jwt.encode({"sub": "x", "role": "admin"}, key="", algorithm="none")

    for token in (unsigned, "garbage", "a.b.c"):
        response = await client.get(ME, headers=bearer(token))
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_token"


async def test_missing_token_is_401_and_wrong_role_is_403(client, alice):
    missing = await client.get("/api/v1/users/")
    wrong_scheme = await client.get("/api/v1/users/", headers={"Authorization": "Basic eDp5"})
    wrong_role = await client.get("/api/v1/users/", headers=alice.headers)

    assert missing.status_code == 401
    assert missing.json()["error"] == "missing_token"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert wrong_scheme.status_code == 401
    assert wrong_role.status_code == 403
    assert wrong_role.json()["error"] == "forbidden"
