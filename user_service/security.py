"""Passwords, signing keys, token issuing and local token verification.

- Passwords: argon2id, computed in a worker thread (it takes tens of milliseconds on purpose) and
  bounded in concurrency, since each hash holds ``argon2_memory_kib`` of memory; callers beyond
  a bounded queue are refused (503 ``busy``) rather than queued without end.
- Signing keys: RS256 key pairs stored in PostgreSQL (table ``signing_keys``) so every replica signs
  with the same active key and publishes the same JWKS. Each replica keeps the active key and the
  published public keys in memory for ``signing_key_cache_seconds``.
- :class:`LocalVerifier` verifies tokens with the service's own published keys (no HTTP round trip).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import jwt
import structlog
from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from libs.http.auth import (
    ALGORITHM,
    KeyCache,
    Principal,
    Role,
    decode_token,
    principal_from_claims,
    token_kid,
)
from libs.http.errors import Conflict, NotFound, ServiceUnavailable, Unauthorized
from user_service import repository
from user_service.config import UserSettings
from user_service.models import SigningKey, utcnow

log = structlog.get_logger(__name__)

KeyStatus = Literal["active", "retiring", "retired"]

PASSWORD_CHECKS_REFUSED = Counter(
    "user_password_checks_refused_total",
    "Password hashes and checks refused with 503 busy: the hashing queue was full",
)

# ---------------------------------------------------------------------------------------------
# Passwords


class PasswordHasher:
    """argon2id hashing off the event loop: as many at once as there are CPUs (at least 2), and
    at most ``password_check_queue`` more callers waiting for one. Beyond that a caller is refused
    at once with 503 ``busy`` (Retry-After 1): a flood of logins costs its senders a retry, not
    every other login and client token exchange a wait behind it."""

    def __init__(self, settings: UserSettings) -> None:
        self._hasher = Argon2Hasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        slots = max(2, os.cpu_count() or 2)
        self._slots = asyncio.Semaphore(slots)
        self._limit = slots + settings.password_check_queue
        self._admitted = 0  # hashing or waiting for a slot
        self._dummy_hash: str | None = None

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._admitted >= self._limit:
            PASSWORD_CHECKS_REFUSED.inc()
            raise ServiceUnavailable(
                "Too many password checks at once; retry in a second.",
                code="busy",
                headers={"Retry-After": "1"},
            )
        self._admitted += 1
        try:
            async with self._slots:
                yield
        finally:
            self._admitted -= 1

    async def hash(self, password: str) -> str:
        async with self._slot():
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        async with self._slot():
            return await asyncio.to_thread(check)

    async def verify_unknown_account(self, password: str) -> None:
        """Spend the same time as a real check, so a response time does not tell which emails
        have an account."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(uuid.uuid4().hex)
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True


# ---------------------------------------------------------------------------------------------
# Signing keys


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 thumbprint of an RSA public key: a stable, content-derived key id."""
    canonical = json.dumps(
        {"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    return _b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def _generate_key_pair(bits: int) -> tuple[str, str, dict[str, Any]]:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    jwk: dict[str, Any] = {"kty": public["kty"], "n": public["n"], "e": public["e"]}
    kid = jwk_thumbprint(jwk)
    jwk.update(kid=kid, use="sig", alg=ALGORITHM)
    return kid, pem, jwk


async def new_signing_key(settings: UserSettings, *, now: datetime) -> SigningKey:
    """A fresh, active key pair (generation runs in a thread: it takes ~100 ms)."""
    kid, pem, jwk = await asyncio.to_thread(_generate_key_pair, settings.signing_key_bits)
    return SigningKey(
        kid=kid, private_key_pem=pem, public_jwk=jwk, created_at=now, activated_at=now
    )


def key_status(key: SigningKey, now: datetime) -> KeyStatus:
    """``active`` signs; ``retiring`` only verifies until ``retired_at``; ``retired`` is gone."""
    if key.retired_at is None:
        return "active"
    return "retiring" if key.retired_at > now else "retired"


def retirement_time(settings: UserSettings, now: datetime) -> datetime:
    """When the last token signed by a key replaced ``now`` expires, at the latest.

    Other replicas may keep signing with the replaced key for up to ``signing_key_cache_seconds``.
    """
    return now + timedelta(
        seconds=settings.access_token_ttl_seconds
        + settings.signing_key_cache_seconds
        + settings.key_retirement_grace_seconds
    )


async def ensure_signing_key(session: AsyncSession, settings: UserSettings) -> SigningKey:
    """The active key, created if there is none (serialised across replicas)."""
    await repository.lock_signing_keys(session)
    key = await repository.active_signing_key(session)
    if key is None:
        key = await new_signing_key(settings, now=utcnow())
        session.add(key)
        await session.flush()
        log.info("auth.signing_key_created", kid=key.kid)
    return key


async def rotate_signing_key(session: AsyncSession, settings: UserSettings) -> SigningKey:
    """Make a new key active; the previous ones keep verifying until their tokens expire."""
    await repository.lock_signing_keys(session)
    now = utcnow()
    new_key = await new_signing_key(settings, now=now)
    replaced = await repository.unretired_signing_keys(session)
    for key in replaced:
        key.retired_at = retirement_time(settings, now)
        key.private_key_pem = None  # it will never sign again
        session.add(key)
    session.add(new_key)
    await session.flush()
    log.info("auth.signing_key_rotated", kid=new_key.kid, replaced=[key.kid for key in replaced])
    return new_key


async def retire_signing_key(session: AsyncSession, kid: str) -> SigningKey:
    """Stop publishing ``kid`` now: tokens it signed stop verifying (after caches expire)."""
    await repository.lock_signing_keys(session)
    key = await repository.get_signing_key(session, kid)
    if key is None:
        raise NotFound(f"No signing key {kid!r}.", code="key_not_found")
    now = utcnow()
    if key.retired_at is None:
        raise Conflict(
            "This is the active signing key; rotate first, then retire it.", code="key_active"
        )
    if key.retired_at > now:
        key.retired_at = now
        key.private_key_pem = None
        session.add(key)
        await session.flush()
        log.info("auth.signing_key_retired", kid=kid)
    return key


_MISS_REFRESH_SECONDS = 0.25
_PUBLIC_FETCH_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class ActiveKey:
    kid: str
    private_key: Any


class SigningKeyStore:
    """The active signing key and the published public keys, read from the database and cached
    briefly so that replicas agree without asking the database on every request."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: UserSettings) -> None:
        self._sessions = sessions
        self._settings = settings
        self._ttl = settings.signing_key_cache_seconds
        self._active: ActiveKey | None = None
        self._active_at = 0.0
        self._lock = asyncio.Lock()
        # Verification keys: an unknown kid refetches at most every _MISS_REFRESH_SECONDS, and
        # never makes other requests wait (see KeyCache).
        self._public = KeyCache(
            self._fetch_public,
            max_age=self._ttl,
            min_refresh=min(_MISS_REFRESH_SECONDS, self._ttl),
            fetch_timeout=_PUBLIC_FETCH_TIMEOUT_SECONDS,
            source="signing_keys",
        )

    def invalidate(self) -> None:
        """Forget cached keys (after this replica rotated or retired one)."""
        self._active = None
        self._public.forget()

    async def active_key(self) -> ActiveKey:
        active = self._active
        if active is not None and time.monotonic() - self._active_at < self._ttl:
            return active
        async with self._lock:
            if self._active is not None and time.monotonic() - self._active_at < self._ttl:
                return self._active
            async with self._sessions() as session, session.begin():
                key = await repository.active_signing_key(session)
                if key is None or key.private_key_pem is None:
                    key = await ensure_signing_key(session, self._settings)
            if key.private_key_pem is None:  # active keys always keep their secret
                raise RuntimeError(f"active signing key {key.kid} has no private key")
            private_key = serialization.load_pem_private_key(
                key.private_key_pem.encode("ascii"), password=None
            )
            self._active = ActiveKey(kid=key.kid, private_key=private_key)
            self._active_at = time.monotonic()
            return self._active

    async def published_jwks(self) -> list[dict[str, Any]]:
        """Public JWKs of every key that still verifies, straight from the database, so a key
        rotated on another replica is visible at once to a verifier that refetches."""
        async with self._sessions() as session:
            keys = await repository.published_signing_keys(session, utcnow())
        return [dict(key.public_jwk) for key in keys]

    async def _fetch_public(self) -> dict[str, Any]:
        return {jwk["kid"]: RSAAlgorithm.from_jwk(jwk) for jwk in await self.published_jwks()}

    async def verification_key(self, kid: str) -> Any | None:
        """The public key for ``kid`` if it is published. An unknown kid triggers a refetch,
        at most every ``_MISS_REFRESH_SECONDS``, so random key ids cannot hammer the database."""
        return await self._public.get(kid)


# ---------------------------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    kid: str


class TokenIssuer:
    def __init__(self, keys: SigningKeyStore, settings: UserSettings) -> None:
        self._keys = keys
        self._settings = settings

    async def issue(
        self, subject: uuid.UUID | str, role: Role, *, ttl: int | None = None
    ) -> IssuedToken:
        key = await self._keys.active_key()
        now = int(time.time())
        ttl = ttl or self._settings.access_token_ttl_seconds
        claims = {
            "sub": str(subject),
            "role": role.value,
            "iat": now,
            "exp": now + ttl,
            "iss": self._settings.jwt_issuer,
            "aud": self._settings.jwt_audience,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
        return IssuedToken(access_token=token, expires_in=ttl, kid=key.kid)


class LocalVerifier:
    """:class:`libs.http.auth.TokenVerifier` for user_service itself: verifies with its own
    published keys, so a retired key stops working here as it does everywhere else."""

    def __init__(self, keys: SigningKeyStore, settings: UserSettings) -> None:
        self._keys = keys
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience

    async def verify(self, token: str) -> Principal:
        kid = token_kid(token)
        key = await self._keys.verification_key(kid)
        if key is None:
            raise Unauthorized("The token was signed with an unknown key.", code="invalid_token")
        claims = decode_token(token, key, issuer=self._issuer, audience=self._audience)
        return principal_from_claims(claims)
