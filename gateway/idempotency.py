"""Idempotency records: what the gateway remembers of each (caller, ``request_id``).

A record is ``pending`` while its first request is being accepted (it names the notification id
the request will publish) and ``accepted`` once the broker confirmed (it holds the answer given).
:class:`IdempotencyStore` is what intake needs; :class:`RedisIdempotencyStore` keeps the records in
Redis, where ``SET NX`` makes the first request the only one that publishes.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from gateway.schemas import NotificationAccepted
from libs.storage.redis import Keys, lua_script

_RELEASE = lua_script(__file__, "idempotency_release.lua")


class IdempotencyRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    state: Literal["pending", "accepted"]
    fingerprint: str
    notification_id: str | None = None
    response: NotificationAccepted | None = None

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class IdempotencyStore(Protocol):
    async def read(self, scope: str, request_id: str) -> IdempotencyRecord | None: ...

    async def reserve(
        self, scope: str, request_id: str, record: IdempotencyRecord, ttl: int
    ) -> bool:
        """Store ``record`` unless one exists; True if this call stored it."""
        ...

    async def release(self, scope: str, request_id: str, record: IdempotencyRecord) -> None:
        """Remove the record if it is still ``record`` (nobody took over meanwhile)."""
        ...

    async def settle(
        self, scope: str, request_id: str, record: IdempotencyRecord, ttl: int
    ) -> None:
        """Replace the record (pending -> accepted)."""
        ...


class RedisIdempotencyStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._release = redis.register_script(_RELEASE)

    async def read(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        raw = await self._redis.get(self._keys.idempotency(scope, request_id))
        return None if raw is None else IdempotencyRecord.model_validate_json(raw)

    async def reserve(
        self, scope: str, request_id: str, record: IdempotencyRecord, ttl: int
    ) -> bool:
        key = self._keys.idempotency(scope, request_id)
        return bool(await self._redis.set(key, record.encode(), nx=True, ex=ttl))

    async def release(self, scope: str, request_id: str, record: IdempotencyRecord) -> None:
        key = self._keys.idempotency(scope, request_id)
        await self._release(keys=[key], args=[record.encode()])

    async def settle(
        self, scope: str, request_id: str, record: IdempotencyRecord, ttl: int
    ) -> None:
        await self._redis.set(self._keys.idempotency(scope, request_id), record.encode(), ex=ttl)
