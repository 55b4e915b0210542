"""JWT verification and role checks.

user_service signs tokens with a private key (RS256, a ``kid`` per key) and publishes the public
keys at ``/.well-known/jwks.json``. Every other service verifies with those public keys, cached, so
no verifying service can mint a token. An unknown ``kid`` triggers one refetch (at most every few
seconds), which is how a rotated key is picked up without a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Protocol, runtime_checkable

import httpx
import jwt
import structlog
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from libs.http.errors import Forbidden, ServiceUnavailable, Unauthorized
from libs.http.state import read_state

log = structlog.get_logger(__name__)

ALGORITHM = "RS256"
JWKS_PATH = "/.well-known/jwks.json"


class Role(StrEnum):
    ADMIN = "admin"
    SERVICE = "service"
    USER = "user"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the verified claims of their token."""

    sub: str
    role: Role
    jti: str
    exp: int

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal: ...


@runtime_checkable
class HasVerifier(Protocol):
    """A service state that authenticates requests."""

    @property
    def verifier(self) -> TokenVerifier: ...


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    try:
        return Principal(
            sub=str(claims["sub"]),
            role=Role(claims["role"]),
            jti=str(claims["jti"]),
            exp=int(claims["exp"]),
        )
    except (KeyError, ValueError) as exc:
        raise Unauthorized("The token lacks a required claim.", code="invalid_token") from exc


def decode_token(
    token: str, key: Any, *, issuer: str, audience: str, leeway: float = 5.0
) -> dict[str, Any]:
    """Verify signature, expiry, issuer and audience; raise :class:`Unauthorized` otherwise."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The token has expired.", code="token_expired") from exc
    except jwt.InvalidAudienceError as exc:
        raise Unauthorized(
            "The token is not meant for this service.", code="invalid_token"
        ) from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"The token is not valid: {exc}", code="invalid_token") from exc
    return claims


def token_kid(token: str) -> str:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("The token is malformed.", code="invalid_token") from exc
    if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
        raise Unauthorized("The token's algorithm or key id is not accepted.", code="invalid_token")
    return str(header["kid"])


class JwksVerifier:
    """Verify tokens with public keys fetched from a JWKS URL and cached."""

    def __init__(
        self,
        jwks_url: str,
        http: httpx.AsyncClient,
        *,
        issuer: str,
        audience: str,
        cache_seconds: float = 300,
        min_refresh_interval: float = 1.0,
    ) -> None:
        self._url = jwks_url
        self._http = http
        self._issuer = issuer
        self._audience = audience
        self._cache_seconds = cache_seconds
        self._min_refresh = min_refresh_interval
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _refresh(self, *, missing_kid: str | None = None) -> None:
        """Fetch the JWKS when the cache is old, or because ``missing_kid`` is unknown.

        Forced refetches happen at most once per ``min_refresh_interval``: a caller arriving
        sooner waits for the interval to pass, so a just-rotated key is found without a 401
        while a flood of made-up kids costs at most one fetch per interval.
        """
        if missing_kid is None and time.monotonic() - self._fetched_at < self._cache_seconds:
            return  # the common case, on every request: no lock
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if missing_kid is None and age < self._cache_seconds:
                return
            if missing_kid is not None and missing_kid in self._keys:
                return  # another caller fetched it while we waited for the lock
            if missing_kid is not None and age < self._min_refresh:
                await asyncio.sleep(self._min_refresh - age)
            try:
                response = await self._http.get(self._url)
                response.raise_for_status()
                keyset = jwt.PyJWKSet.from_dict(response.json())
            except (httpx.HTTPError, jwt.PyJWKSetError, ValueError) as exc:
                if self._keys:
                    log.warning("auth.jwks_refresh_failed", error=repr(exc))
                    self._fetched_at = time.monotonic()  # keep serving the cached keys
                    return
                raise ServiceUnavailable(
                    "Cannot fetch signing keys from the user service.", code="auth_unavailable"
                ) from exc
            self._keys = {k.key_id: k.key for k in keyset.keys if k.key_id}
            self._fetched_at = time.monotonic()

    async def verify(self, token: str) -> Principal:
        kid = token_kid(token)
        await self._refresh()
        if kid not in self._keys:
            await self._refresh(missing_kid=kid)
        key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("The token was signed with an unknown key.", code="invalid_token")
        claims = decode_token(token, key, issuer=self._issuer, audience=self._audience)
        return principal_from_claims(claims)


_bearer = HTTPBearer(auto_error=False)


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized(
            "A bearer token is required.",
            code="missing_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    state = read_state(request, HasVerifier)  # type: ignore[type-abstract]
    return await state.verifier.verify(credentials.credentials)


def require_roles(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits only the given roles (403 for a valid token with another role)."""
    allowed = frozenset(roles)

    async def dependency(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        if principal.role not in allowed:
            raise Forbidden(f"This action needs one of the roles: {', '.join(sorted(allowed))}.")
        return principal

    return dependency


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
