"""Send claims: at most one send per notification, channel and recipient, across crashes.

Before calling a provider, a consumer claims ``claim:<channel>:<notification>:<recipient>``; after
the provider accepted, it marks the claim ``sent``. A redelivered message (its consumer crashed)
finds ``sent`` and is acknowledged without a second send.

A claim being sent names its holder's instance id. Every consumer process keeps a short-lived
``alive`` key (refreshed each second); a claim whose holder is no longer alive is taken over at
once, so a crash delays its messages by seconds, not by a long lease. The lease itself only bounds
a holder that is alive but stuck.

The one window left: the provider accepted the message and the process died before the ``sent``
mark reached Redis (one Redis round trip, well under a millisecond on a LAN). A message in that
window is sent again when redelivered. No SMTP or FCM API offers an idempotency key to close it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass
from enum import StrEnum

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from libs.redis import Keys

log = structlog.get_logger(__name__)

_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current then
  if string.sub(current, 1, 5) == 'sent:' then return current end
  local holder = string.match(current, '^sending:([^:]+):')
  if holder and redis.call('EXISTS', ARGV[3] .. holder) == 1 then return 'busy:' .. current end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 'acquired'
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ClaimState(StrEnum):
    ACQUIRED = "acquired"
    SENT = "sent"
    BUSY = "busy"


@dataclass(frozen=True)
class Claim:
    key: str
    token: str
    state: ClaimState
    provider: str | None = None


class SendClaims:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        instance_id: str,
        *,
        lease_ms: int = 60_000,
        sent_ttl_seconds: int = 7 * 86400,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.instance_id = instance_id
        self._lease_ms = lease_ms
        self._sent_ttl = sent_ttl_seconds
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)

    def _alive_key(self, instance: str) -> str:
        return f"{self._keys.prefix}alive:{instance}"

    async def acquire(self, channel: str, notification_id: str, recipient: str) -> Claim:
        key = self._keys.send_claim(channel, f"{notification_id}:{recipient}")
        token = f"sending:{self.instance_id}:{uuid.uuid4().hex}"
        raw = await self._acquire(keys=[key], args=[token, self._lease_ms, self._alive_key("")])
        result = raw.decode() if isinstance(raw, bytes) else str(raw)
        if result == "acquired":
            return Claim(key, token, ClaimState.ACQUIRED)
        if result.startswith("sent:"):
            return Claim(key, token, ClaimState.SENT, provider=result[5:] or None)
        return Claim(key, token, ClaimState.BUSY)

    async def mark_sent(self, claim: Claim, provider: str) -> None:
        await self._redis.set(claim.key, f"sent:{provider}", ex=self._sent_ttl)

    async def release(self, claim: Claim) -> None:
        """Give the claim up after a failed send, so a retry may claim it again."""
        try:
            await self._release(keys=[claim.key], args=[claim.token])
        except RedisError as exc:  # the lease expires by itself; never hide the send error
            log.warning("claims.release_failed", key=claim.key, error=repr(exc))


class InstanceHeartbeat:
    """Keeps ``alive:<instance>`` present while this process runs (see module docstring)."""

    def __init__(self, redis: Redis, keys: Keys, instance_id: str, ttl_ms: int = 5000) -> None:
        self._redis = redis
        self._key = f"{keys.prefix}alive:{instance_id}"
        self._ttl_ms = ttl_ms
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._redis.set(self._key, "1", px=self._ttl_ms)
        self._task = asyncio.create_task(self._beat(), name="instance-heartbeat")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 5000)
            try:
                await self._redis.set(self._key, "1", px=self._ttl_ms)
            except RedisError as exc:
                log.warning("heartbeat.failed", error=repr(exc))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError):
            await self._redis.delete(self._key)


def new_instance_id(service: str) -> str:
    return f"{service}-{uuid.uuid4().hex[:12]}"
