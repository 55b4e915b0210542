"""JWT verification and role checks.

user_service signs tokens with a private key (RS256, a ``kid`` per key) and publishes the public
keys at ``/.well-known/jwks.json``. Every other service verifies with those public keys, cached, so
no verifying service can mint a token. An unknown ``kid`` triggers one refetch (at most one in
flight, at most one per second), which is how a rotated key is picked up without a restart; no
request waits behind another's unknown kid (:class:`KeyCache`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, NoReturn, Protocol, runtime_checkable

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
    """Who a token speaks for (docs/security.md has what each may do)."""

    ADMIN = "admin"
    """An operator (a person): everything."""
    SERVICE = "service"
    """One of our own services calling another (users, renders, pruning tokens)."""
    USER = "user"
    """An end user: only themself."""
    CLIENT = "client"
    """A client backend that sends notifications and sees only its own; ``sub`` is its client id
    (a row of user_service's ``clients`` table, not a user account)."""


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
        principal = Principal(
            sub=str(claims["sub"]),
            role=Role(claims["role"]),
            jti=str(claims["jti"]),
            exp=int(claims["exp"]),
        )
    except (KeyError, ValueError) as exc:
        raise Unauthorized("The token lacks a required claim.", code="invalid_token") from exc
    if not principal.sub:  # an empty subject would match "no owner" filters
        raise Unauthorized("The token's subject is empty.", code="invalid_token")
    return principal


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


KeyFetch = Callable[[], Awaitable[dict[str, Any]]]
"""Returns every published public key by ``kid``; raises when the keys cannot be read."""


class KeyCache:
    """Public keys by ``kid``, refreshed from a source with at most one fetch in flight.

    No caller can stall the others, whatever kid its token names:

    - a known kid is answered from memory and never waits: when the keys are older than
      ``max_age`` a refresh starts in the background and the current keys keep answering;
    - an unknown kid waits for the fetch in flight (one shared task, awaited without any lock and
      bounded by ``fetch_timeout``), or starts one if no kid-triggered fetch started within
      ``min_refresh``; otherwise it is unknown at once. A flood of made-up kids therefore costs at
      most one fetch per ``min_refresh`` and delays nobody else;
    - before the first successful fetch every caller waits for it (there is nothing to answer from).

    A failed fetch keeps the keys already known (logged); with none known, callers get 503.
    """

    def __init__(
        self,
        fetch: KeyFetch,
        *,
        max_age: float,
        min_refresh: float,
        fetch_timeout: float,
        source: str,
    ) -> None:
        self._fetch = fetch
        self._max_age = max_age
        self._min_refresh = min_refresh
        self._fetch_timeout = fetch_timeout
        self._source = source
        self._keys: dict[str, Any] = {}
        self._loaded = False
        self._fetched_at = -math.inf
        self._started_at = -math.inf
        self._miss_started_at = -math.inf
        self._generation = 0
        self._task: asyncio.Task[None] | None = None
        self._task_generation = -1

    def forget(self) -> None:
        """Drop every key (one was retired here): the next caller waits for a fresh fetch, and
        a fetch already in flight, which may have read the old keys, is not used."""
        self._generation += 1
        self._keys = {}
        self._loaded = False
        self._started_at = self._miss_started_at = -math.inf

    async def get(self, kid: str) -> Any | None:
        """The key for ``kid``, or None when the source does not publish it (as far as we know)."""
        now = time.monotonic()
        if self._loaded:
            if (
                now - self._fetched_at >= self._max_age
                and now - self._started_at >= self._min_refresh
            ):
                self._start(now)  # in the background: nobody waits for a periodic refresh
            key = self._keys.get(kid)
            if key is not None:
                return key
        task = self._in_flight()
        if task is None:
            if self._loaded and now - self._miss_started_at < self._min_refresh:
                return None  # refetched for an unknown kid moments ago: do not wait, do not fetch
            if not self._loaded and now - self._started_at < self._min_refresh:
                self._unavailable()  # the source just failed: answer at once, do not pile up
            if self._loaded:
                self._miss_started_at = now
            task = self._start(now)
        await asyncio.shield(task)  # a caller that goes away does not cancel the others' fetch
        if not self._loaded:
            self._unavailable()
        return self._keys.get(kid)

    def _in_flight(self) -> asyncio.Task[None] | None:
        task = self._task
        if task is None or task.done() or self._task_generation != self._generation:
            return None
        return task

    def _start(self, now: float) -> asyncio.Task[None]:
        task = self._in_flight()
        if task is None:
            self._started_at = now
            self._task_generation = self._generation
            task = self._task = asyncio.create_task(self._refresh(self._generation))
        return task

    async def _refresh(self, generation: int) -> None:
        try:
            async with asyncio.timeout(self._fetch_timeout):
                keys = await self._fetch()
        except Exception as exc:  # any failure of the source keeps what we have
            log.warning("auth.keys_refresh_failed", source=self._source, error=repr(exc))
            return
        if generation == self._generation:
            self._keys = keys
            self._loaded = True
            self._fetched_at = time.monotonic()

    def _unavailable(self) -> NoReturn:
        raise ServiceUnavailable(
            "Cannot fetch signing keys from the user service.", code="auth_unavailable"
        )


class JwksVerifier:
    """Verify tokens with public keys fetched from a JWKS URL and cached (:class:`KeyCache`)."""

    def __init__(
        self,
        jwks_url: str,
        http: httpx.AsyncClient,
        *,
        issuer: str,
        audience: str,
        cache_seconds: float = 300,
        min_refresh_interval: float = 1.0,
        fetch_timeout: float = 5.0,
    ) -> None:
        self._url = jwks_url
        self._http = http
        self._issuer = issuer
        self._audience = audience
        self._keys = KeyCache(
            self._fetch,
            max_age=cache_seconds,
            min_refresh=min_refresh_interval,
            fetch_timeout=fetch_timeout,
            source=jwks_url,
        )

    async def _fetch(self) -> dict[str, Any]:
        response = await self._http.get(self._url)
        response.raise_for_status()
        keyset = jwt.PyJWKSet.from_dict(response.json())
        return {k.key_id: k.key for k in keyset.keys if k.key_id}

    async def verify(self, token: str) -> Principal:
        kid = token_kid(token)
        key = await self._keys.get(kid)
        if key is None:
            raise Unauthorized("The token was signed with an unknown key.", code="invalid_token")
        claims = decode_token(token, key, issuer=self._issuer, audience=self._audience)
        return principal_from_claims(claims)


bearer = HTTPBearer(auto_error=False)
"""The bearer-token dependency: it reads the header and puts the scheme in the OpenAPI."""

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    """The caller of ``request``, from the credentials :data:`bearer` read (401 without)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized(
            "A bearer token is required.",
            code="missing_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    state = read_state(request, HasVerifier)  # type: ignore[type-abstract]
    return await state.verifier.verify(credentials.credentials)


async def current_principal(request: Request, credentials: Credentials) -> Principal:
    return await authenticate(request, credentials)


def check_role(principal: Principal, allowed: frozenset[Role]) -> Principal:
    """``principal`` if its role is one of ``allowed``; 403 otherwise."""
    if principal.role not in allowed:
        raise Forbidden(f"This action needs one of the roles: {', '.join(sorted(allowed))}.")
    return principal


def require_roles(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits only the given roles (403 for a valid token with another role)."""
    allowed = frozenset(roles)

    async def dependency(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> Principal:
        return check_role(principal, allowed)

    return dependency


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
