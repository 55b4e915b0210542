"""A token bucket in Redis, shared by every replica (gateway request limits, provider send quotas).

The bucket refills continuously at ``rate`` tokens per second up to ``capacity``. Time comes from
the Redis server (``TIME``), so replicas with skewed clocks still share one consistent bucket.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio import Redis

from libs.storage.redis import lua_script

_TAKE = lua_script(__file__, "token_bucket_take.lua")


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_ms: int


class TokenBuckets:
    """Buckets of one rate and capacity, one per key (say, one per caller); built once."""

    def __init__(self, redis: Redis, *, rate: float, capacity: float) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self._rate = rate
        self._capacity = capacity
        self._script = redis.register_script(_TAKE)

    async def try_take(self, key: str, tokens: float = 1) -> Verdict:
        """Take ``tokens`` if available now; otherwise say how long until they would be."""
        wait = int(await self._script(keys=[key], args=[self._rate, self._capacity, tokens]))
        return Verdict(allowed=wait == 0, retry_after_ms=wait)


class TokenBucket:
    """One bucket (a provider's send quota)."""

    def __init__(self, redis: Redis, key: str, *, rate: float, capacity: float) -> None:
        self._key = key
        self._buckets = TokenBuckets(redis, rate=rate, capacity=capacity)

    async def try_take(self, tokens: float = 1) -> Verdict:
        return await self._buckets.try_take(self._key, tokens)

    async def take(self, tokens: float = 1, max_wait: float = 30.0) -> bool:
        """Wait (up to ``max_wait`` seconds) until ``tokens`` can be taken; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while True:
            verdict = await self.try_take(tokens)
            if verdict.allowed:
                return True
            pause = verdict.retry_after_ms / 1000
            if loop.time() + pause > deadline:
                return False
            await asyncio.sleep(pause)
