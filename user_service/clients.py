"""Client backends: created and revoked by admins, each with its own secret, exchanged for
short-lived ``client`` tokens (the OAuth 2.0 client credentials grant). Never commits.

- The secret is random (256 bits), shown once at creation, stored only as an argon2id hash.
- A failed exchange is throttled like a login (per client and source address; see
  :mod:`user_service.throttle`), and an unknown or revoked client costs the same time as a wrong
  secret and gets the same 401 ``invalid_client``, so responses tell nothing about which ids exist.
- Revoking refuses new tokens at once. Tokens already issued are refused by the gateway at once
  too: :class:`RevocationList` writes the client's id to Redis for as long as they may live. Other
  services refuse clients anyway (403), whatever their token.
"""

from __future__ import annotations

import secrets
import uuid

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlmodel.ext.asyncio.session import AsyncSession

from libs.http.auth import Principal, Role
from libs.http.errors import NotFound, ServiceUnavailable, Unauthorized
from libs.storage.redis import Keys
from user_service import repository
from user_service.config import UserSettings
from user_service.models import Client, utcnow
from user_service.schemas import ClientCreated, ClientOut, ClientTokenOut
from user_service.security import PasswordHasher, TokenIssuer
from user_service.throttle import LoginThrottle

log = structlog.get_logger(__name__)

# "Herald client secret": recognisable by secret scanners and in a leak (not itself a secret)
SECRET_PREFIX = "hcs_"  # noqa: S105
# Revocation entries outlive the last token by this much (clock skew, verification leeway).
REVOCATION_MARGIN_SECONDS = 60


def new_client_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def client_out(client: Client) -> ClientOut:
    return ClientOut.model_validate(client, from_attributes=True)


def _throttle_key(client_id: str) -> str:
    """What the login throttle counts a client's failures under (never an email: no '@')."""
    return f"client:{client_id}"


class RevocationList:
    """Tells the gateway which clients were revoked while their tokens may still be valid."""

    def __init__(self, redis: Redis, keys: Keys, settings: UserSettings) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = settings.client_token_ttl_seconds + REVOCATION_MARGIN_SECONDS

    async def add(self, client_id: uuid.UUID) -> None:
        try:
            await self._redis.set(self._keys.revoked_client(str(client_id)), "1", ex=self._ttl)
        except (RedisError, OSError) as exc:
            log.error("client.revocation_not_propagated", client_id=str(client_id))
            raise ServiceUnavailable(
                "The client is revoked and gets no new token, but its current token could not "
                "be blocked yet; repeat the request.",
                code="revocation_not_propagated",
            ) from exc


class ClientService:
    def __init__(self, session: AsyncSession, settings: UserSettings, hasher: PasswordHasher):
        self.session = session
        self.settings = settings
        self.hasher = hasher

    async def get(self, client_id: uuid.UUID, *, for_update: bool = False) -> Client:
        client = await repository.get_client(self.session, client_id, for_update=for_update)
        if client is None:
            raise NotFound("No such client.", code="client_not_found")
        return client

    async def search(
        self, *, revoked: bool | None, offset: int, limit: int
    ) -> tuple[list[ClientOut], int]:
        found, total = await repository.list_clients(
            self.session, revoked=revoked, offset=offset, limit=limit
        )
        return [client_out(c) for c in found], total

    async def create(self, name: str, actor: Principal) -> ClientCreated:
        secret = new_client_secret()
        client = Client(name=name, secret_hash=await self.hasher.hash(secret), created_by=actor.sub)
        self.session.add(client)
        await self.session.flush()
        log.info("client.created", client_id=str(client.id), by=actor.sub)
        return ClientCreated(**client_out(client).model_dump(), client_secret=secret)

    async def revoke(self, client_id: uuid.UUID, actor: Principal) -> Client:
        """Idempotent: revoking a revoked client keeps its first revocation time."""
        client = await self.get(client_id, for_update=True)
        if client.revoked_at is None:
            client.revoked_at = utcnow()
            self.session.add(client)
            await self.session.flush()
            log.info("client.revoked", client_id=str(client_id), by=actor.sub)
        return client

    async def exchange(
        self,
        client_id: uuid.UUID,
        secret: str,
        source: str,
        throttle: LoginThrottle,
        issuer: TokenIssuer,
    ) -> ClientTokenOut:
        """A ``client`` token for a live client with the right secret; 401 otherwise."""
        account = _throttle_key(str(client_id))
        await throttle.admit(account, source)  # before the session holds a database connection
        client = await repository.get_client(self.session, client_id)
        await self.session.commit()  # its connection back to the pool while the hash runs
        if client is None or client.revoked_at is not None:
            await self.hasher.verify_unknown_account(secret)
            valid = False
        else:
            valid = await self.hasher.verify(client.secret_hash, secret)
        if client is None or not valid:
            failures = await throttle.record_failure(account, source)
            log.info("auth.client_token_refused", client_id=str(client_id), failures=failures)
            raise Unauthorized(
                "Unknown client, revoked client or wrong secret.", code="invalid_client"
            )
        await throttle.reset(account, source)
        client.last_token_at = utcnow()
        self.session.add(client)
        await self.session.flush()
        ttl = self.settings.client_token_ttl_seconds
        issued = await issuer.issue(client.id, Role.CLIENT, ttl=ttl)
        log.info("auth.client_token_issued", client_id=str(client.id), kid=issued.kid)
        return ClientTokenOut(access_token=issued.access_token, expires_in=issued.expires_in)
