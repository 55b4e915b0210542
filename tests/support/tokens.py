"""A stand-in token issuer for tests of services other than user_service.

It holds RSA keys, serves them as a JWKS document (the same shape user_service serves: envelope plus
a top-level ``keys``), and mints tokens with any role, lifetime, audience or key.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI

from libs.http.auth import ALGORITHM
from tests.support.servers import live_server

ISSUER = "herald-user-service"
AUDIENCE = "herald"

# Generating a 2048-bit RSA key costs about 90 ms of CPU, and every test of a service makes a mint:
# keys are drawn in turn from a ring generated once per process. A mint's keys are distinct (a
# test holds far fewer than the ring), and each gets a fresh kid, so no two tests share a key id.
_KEY_RING_SIZE = 16
_key_ring: list[rsa.RSAPrivateKey] = []
_next_key = itertools.count()


def _ring_key() -> rsa.RSAPrivateKey:
    index = next(_next_key) % _KEY_RING_SIZE
    if index == len(_key_ring):
        _key_ring.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _key_ring[index]


class TokenMint:
    def __init__(self, issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        self.issuer = issuer
        self.audience = audience
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.published: set[str] = set()
        self.active = self.add_key()

    def add_key(self, publish: bool = True) -> str:
        kid = uuid.uuid4().hex[:16]
        self.keys[kid] = _ring_key()
        if publish:
            self.published.add(kid)
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in sorted(self.published):
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
            keys.append({**jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"})
        return {
            "success": True,
            "data": {"keys": keys},
            "error": None,
            "message": None,
            "meta": None,
            "keys": keys,
        }

    def mint(
        self,
        role: str = "admin",
        sub: str | None = None,
        *,
        ttl: int = 900,
        audience: str | None = None,
        issuer: str | None = None,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {
            "sub": sub or str(uuid.uuid4()),
            "role": role,
            "iat": now,
            "exp": now + ttl,
            "iss": issuer or self.issuer,
            "aud": audience or self.audience,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        key_id = kid or self.active
        return jwt.encode(payload, self.keys[key_id], algorithm=ALGORITHM, headers={"kid": key_id})

    def headers(self, role: str = "admin", sub: str | None = None, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.mint(role, sub, **kw)}"}


@asynccontextmanager
async def jwks_server(mint: TokenMint) -> AsyncIterator[str]:
    """Serve ``mint``'s JWKS at /.well-known/jwks.json; yields the base URL."""
    app = FastAPI()
    app.state.requests = 0

    @app.get("/.well-known/jwks.json")
    async def jwks() -> dict[str, Any]:
        app.state.requests += 1
        return mint.jwks()

    async with live_server(app) as url:
        yield url
