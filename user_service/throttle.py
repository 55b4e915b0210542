"""Login throttling in Redis, shared by every replica.

Failures are counted per account and source address (both hashed: Redis keys carry no
addresses) in a window of ``login_failure_window_seconds`` that starts at the first failure.
Reaching ``login_max_failures`` locks that account *for that source* for
``login_lockout_seconds``: its attempts then get 429 ``too_many_attempts`` with ``Retry-After``,
whatever the password, while the account's owner, calling from elsewhere, is not affected. So a
stranger's guesses alone can lock nobody out but the stranger. Before the lock, attempts after
``login_slowdown_after`` failures wait a delay that doubles with each failure (at most
``login_slowdown_max_seconds``, and without holding a database connection or any lock).

Accounts with the role ``service`` are never locked (our own services must keep their tokens), only
slowed down per source. Unknown emails are counted like accounts, so the lock does not tell which
emails have accounts. A successful login clears the count of its account and source.

The source is the peer address uvicorn reports: behind a reverse proxy, set ``FORWARDED_ALLOW_IPS``
to the proxy's address so that uvicorn takes the client's address from ``X-Forwarded-For``.
"""

from __future__ import annotations

import asyncio
import hashlib

from redis.asyncio import Redis

from libs.http.errors import RateLimited
from libs.storage.ratelimit import TokenBuckets
from libs.storage.redis import Keys, lua_script
from user_service.config import UserSettings

_RECORD_FAILURE = lua_script(__file__, "throttle_record_failure.lua")


def _digest(*parts: str) -> str:
    """What a Redis key says about an account or an address: a hash, never the value."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def slowdown_seconds(failures: int, settings: UserSettings) -> float:
    """The wait before an attempt that follows ``failures`` recent failures."""
    if failures < settings.login_slowdown_after:
        return 0.0
    delay = settings.login_slowdown_base_seconds * 2 ** (failures - settings.login_slowdown_after)
    return float(min(delay, settings.login_slowdown_max_seconds))


class LoginThrottle:
    def __init__(self, redis: Redis, keys: Keys, settings: UserSettings) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._record = redis.register_script(_RECORD_FAILURE)

    def _names(self, account: str, source: str) -> tuple[str, str]:
        digest = _digest(account.strip().lower(), source)
        return (
            self._keys.login_failures(digest),
            self._keys.login_lock(digest),
        )

    async def admit(self, account: str, source: str) -> None:
        """Refuse an account locked for this source; otherwise wait the slow-down its recent
        failures from this source earned."""
        failures_key, lock_key = self._names(account, source)
        pipe = self._redis.pipeline(transaction=False)
        pipe.ttl(lock_key)
        pipe.get(failures_key)
        lock_ttl, failures_raw = await pipe.execute()
        if lock_ttl != -2:  # -2: no lock; -1 cannot happen (always set with EX) but is a lock
            retry_after = lock_ttl if lock_ttl > 0 else self._settings.login_lockout_seconds
            raise RateLimited(
                f"Too many failed logins for this account; try again in {retry_after} s.",
                code="too_many_attempts",
                headers={"Retry-After": str(retry_after)},
            )
        delay = slowdown_seconds(int(failures_raw or 0), self._settings)
        if delay > 0:
            await asyncio.sleep(delay)

    async def record_failure(self, account: str, source: str, *, lockable: bool = True) -> int:
        """Count a failure; returns the count. The lock is set when it reaches the maximum,
        unless the account is not ``lockable`` (a service account)."""
        failures_key, lock_key = self._names(account, source)
        settings = self._settings
        count = await self._record(
            keys=[failures_key, lock_key],
            args=[
                settings.login_failure_window_seconds,
                settings.login_max_failures,
                settings.login_lockout_seconds,
                1 if lockable else 0,
            ],
        )
        return int(count)

    async def reset(self, account: str, source: str) -> None:
        await self._redis.delete(*self._names(account, source))


class RegistrationThrottle:
    """Self-registrations per source address: a token bucket shared by every replica."""

    def __init__(self, redis: Redis, keys: Keys, settings: UserSettings) -> None:
        self._keys = keys
        self._buckets = TokenBuckets(
            redis,
            rate=settings.self_registrations_per_hour / 3600,
            capacity=settings.self_registration_burst,
        )

    async def admit(self, source: str) -> None:
        """Take one registration from ``source``'s bucket, or refuse with 429."""
        verdict = await self._buckets.try_take(self._keys.rate_limit(f"register:{_digest(source)}"))
        if not verdict.allowed:
            seconds = max(1, -(-verdict.retry_after_ms // 1000))
            raise RateLimited(
                "Too many registrations from this address; try again later.",
                headers={"Retry-After": str(seconds)},
            )
