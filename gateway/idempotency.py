"""Idempotency records: what the gateway remembers of each (caller, ``request_id``).

A record is ``pending`` while its first request is being accepted (it names the notification id
the request will publish) and ``accepted`` once the broker confirmed (it holds the answer given).
:class:`IdempotencyStore` is what intake needs; :class:`RedisIdempotencyStore` keeps the records in
Redis, where a claim (``SET NX`` in a script) makes the first request the only one that publishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from gateway.schemas import NotificationAccepted
from libs.storage.redis import Keys, lua_script

_CLAIM = lua_script(__file__, "idempotency_claim.lua")
_RELEASE = lua_script(__file__, "idempotency_release.lua")
_SETTLE = lua_script(__file__, "idempotency_settle.lua")


class IdempotencyRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    state: Literal["pending", "accepted"]
    fingerprint: str
    notification_id: str | None = None
    response: NotificationAccepted | None = None

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


Claim = tuple[str, IdempotencyRecord]
"""A request id and the record to store for it."""


class IdempotencyStore(Protocol):
    async def read(self, scope: str, request_id: str) -> IdempotencyRecord | None: ...

    async def claim(
        self, scope: str, claims: Sequence[Claim], ttl: int
    ) -> list[IdempotencyRecord | None]:
        """Store each record unless its request id has one: per claim, None if this call stored
        it, else the record that was there (left alone). In order, so a request id given twice
        is claimed by its first occurrence."""
        ...

    async def release(self, scope: str, claims: Sequence[Claim]) -> None:
        """Remove each record that is still the one given (nobody took over meanwhile)."""
        ...

    async def settle(self, scope: str, records: Sequence[Claim], ttl: int) -> None:
        """Replace the records (pending -> accepted)."""
        ...


class RedisIdempotencyStore:
    """One script per operation whatever the number of request ids: a batch of 1,000 costs
    what one request does."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._settle = redis.register_script(_SETTLE)

    async def read(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        raw = await self._redis.get(self._keys.idempotency(scope, request_id))
        return None if raw is None else IdempotencyRecord.model_validate_json(raw)

    async def claim(
        self, scope: str, claims: Sequence[Claim], ttl: int
    ) -> list[IdempotencyRecord | None]:
        if not claims:
            return []
        keys = [self._keys.idempotency(scope, request_id) for request_id, _ in claims]
        found = await self._claim(keys=keys, args=[ttl, *(r.encode() for _, r in claims)])
        return [None if r is None else IdempotencyRecord.model_validate_json(r) for r in found]

    async def release(self, scope: str, claims: Sequence[Claim]) -> None:
        if claims:
            keys = [self._keys.idempotency(scope, request_id) for request_id, _ in claims]
            await self._release(keys=keys, args=[r.encode() for _, r in claims])

    async def settle(self, scope: str, records: Sequence[Claim], ttl: int) -> None:
        if records:
            keys = [self._keys.idempotency(scope, request_id) for request_id, _ in records]
            await self._settle(keys=keys, args=[ttl, *(r.encode() for _, r in records)])
