"""Send claims: at most one send per notification, channel and recipient, across crashes.

Before calling a provider, a consumer claims ``claim:<channel>:<notification>:<recipient>``
(``sending``); after the provider accepted, it marks the claim ``sent``. A redelivered message (its
consumer crashed) finds ``sent`` and is acknowledged without a second send.

A claim names its holder's instance id. Every consumer process keeps a short-lived ``alive`` key
(refreshed each second); a claim whose holder is no longer alive is taken over at once, so a crash
delays its messages by seconds, not by a long lease.

The crash window. Marking ``sent`` after the provider's answer leaves a gap: the provider accepted
and the process died before the mark reached Redis. Measured here under load that gap is not a
Redis round trip but the time the process waits for a CPU and its event loop (p50 6 ms, p99 46 ms
with a 2,000-mail burst on two cores), long enough to duplicate a mail or two at every crash.
So where the protocol has a point of no return, the mark is written next to it: the SMTP provider
queues the end-of-data line in the kernel (held back with TCP_CORK, so it wakes nobody), writes
the ``committing`` mark on a Redis connection of its own, then releases the line (details in
``email_service/providers/smtp.py``). After a crash:

- ``sending`` from a dead holder: the end-of-data line was never queued: send again;
- ``committing`` from a dead holder: the line was queued before the mark, and the kernel delivers
  queued data even after the process dies: counted as sent, not sent again.

Left: a kill between the two system calls duplicates (never loses) that one message.

What stays open: a relay that accepted the end-of-data and then failed the transaction (answered
5xx) while the consumer died; and HTTP providers (SendGrid, FCM), which offer no such point and no
idempotency key, keep the gap after their answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from libs.metrics import CLAIM_TAKEOVERS, HEARTBEAT
from libs.storage.redis import Keys, lua_script

log = structlog.get_logger(__name__)

_ACQUIRE = lua_script(__file__, "claim_acquire.lua")

_RELEASE = lua_script(__file__, "claim_release.lua")


class ClaimState(StrEnum):
    ACQUIRED = "acquired"
    SENT = "sent"
    BUSY = "busy"


@dataclass
class Claim:
    key: str
    token: str
    state: ClaimState
    provider: str | None = None
    assumed: bool = False
    """Sent, as far as anyone can tell: the holder died after the point of no return."""
    unknown: bool = False
    """The provider may or may not have it: no answer came after the point of no return."""
    committing: str | None = None
    """The ``committing`` value written for this claim, if any."""


class SendClaims:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        instance_id: str,
        *,
        lease_ms: int = 60_000,
        sent_ttl_seconds: int = 7 * 86400,
        commit_redis: Redis | None = None,
    ) -> None:
        """``commit_redis``: a client without a socket timeout (see :class:`CommitMark`)."""
        self._redis = redis
        self._commit_redis = commit_redis or redis
        self._keys = keys
        self.instance_id = instance_id
        self._lease_ms = lease_ms
        self._sent_ttl = sent_ttl_seconds
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._pending_releases: set[asyncio.Task[None]] = set()

    def _alive_key(self, instance: str) -> str:
        return self._keys.instance_alive(instance)

    async def acquire(self, channel: str, notification_id: str, recipient: str) -> Claim:
        key = self._keys.send_claim(channel, f"{notification_id}:{recipient}")
        token = f"sending:{self.instance_id}:{uuid.uuid4().hex}"
        raw = await self._acquire(
            keys=[key], args=[token, self._lease_ms, self._alive_key(""), self._sent_ttl]
        )
        result = raw.decode() if isinstance(raw, bytes) else str(raw)
        if result.endswith(":takeover"):
            result = result.removesuffix(":takeover")
            CLAIM_TAKEOVERS.labels(
                channel, "resent" if result == "acquired" else "assumed_sent"
            ).inc()
        if result == "acquired":
            return Claim(key, token, ClaimState.ACQUIRED)
        if result.startswith("sent:"):
            parts = result.split(":")
            return Claim(
                key,
                token,
                ClaimState.SENT,
                provider=parts[1] or None,
                assumed=parts[-1] == "assumed",
                unknown=parts[-1] == "unknown",
            )
        return Claim(key, token, ClaimState.BUSY)

    def commit_mark(self, claim: Claim) -> CommitMark:
        return CommitMark(self._commit_redis, claim, self.instance_id, self._lease_ms)

    async def mark_sent(self, claim: Claim, provider: str) -> None:
        """Record that the provider accepted. Retried until Redis takes it: the mail is out, and
        a claim left ``sending`` would let a redelivery send it again once its lease ran out."""
        # the time is kept for forensics: how long after the provider's answer the mark landed
        await self._set_until_stored(claim, f"sent:{provider}:{time.time():.6f}")

    async def mark_unknown(self, claim: Claim, provider: str) -> None:
        """The outcome is unknown after the point of no return: never send this one again."""
        await self._set_until_stored(claim, f"sent:{provider}:unknown")

    async def _set_until_stored(self, claim: Claim, value: str) -> None:
        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            log.warning("claims.mark_retry", key=claim.key, value=value, error=repr(error))

        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((RedisError, OSError)),
            wait=wait_exponential(multiplier=0.1, max=5.0),
            before_sleep=log_retry,
        ):
            with attempt:
                await self._redis.set(claim.key, value, ex=self._sent_ttl)

    async def release(self, claim: Claim) -> None:
        """Give the claim up after a failed send, so a retry may claim it again.

        Never raises: if Redis is away, the release is retried in the background (until the
        lease would have lapsed anyway), so the message's retry finds the claim free rather
        than held by this still-living instance until the lease runs out.
        """
        try:
            await self._release_now(claim)
        except (RedisError, OSError) as exc:
            log.warning("claims.release_deferred", key=claim.key, error=repr(exc))
            task = asyncio.create_task(self._release_later(claim), name="claim-release")
            self._pending_releases.add(task)
            task.add_done_callback(self._pending_releases.discard)

    async def _release_now(self, claim: Claim) -> None:
        await self._release(keys=[claim.key], args=[claim.token, claim.committing or ""])

    async def _release_later(self, claim: Claim) -> None:
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((RedisError, OSError)),
                wait=wait_exponential(multiplier=0.2, max=5.0),
                stop=stop_after_delay(self._lease_ms / 1000),
                reraise=True,
            ):
                with attempt:
                    await self._release_now(claim)
        except (RedisError, OSError) as exc:  # the lease lapses by itself
            log.warning("claims.release_failed", key=claim.key, error=repr(exc))


SETTLE_TIMEOUT = 5.0


class CommitMark:
    """Marks a claim ``committing`` right before a provider's point of no return.

    :meth:`write` hands the ``SET`` to the kernel on a connection of its own and returns without
    reading the reply, so the caller's next ``write`` (the end-of-data line) follows it at once;
    :meth:`settle` reads the reply afterwards. The client must have no socket timeout: with one,
    redis-py writes through ``asyncio.wait_for`` in another task, a loop turn later.
    """

    def __init__(
        self,
        redis: Redis,
        claim: Claim,
        instance_id: str,
        lease_ms: int,
        timeout: float = SETTLE_TIMEOUT,
    ) -> None:
        self._pool = redis.connection_pool
        self._claim = claim
        self._instance = instance_id
        self._lease_ms = lease_ms
        self._timeout = timeout
        self._connection: Any = None

    async def prepare(self) -> None:
        """Take a connection of our own, connected, within the timeout. Whatever happens, a
        connection taken from the pool is either kept for :meth:`settle` or given back."""
        if self._connection is not None:
            return
        try:
            connection = self._pool.get_available_connection()  # type: ignore[no-untyped-call]
        except (RedisError, OSError) as exc:
            log.warning("claims.commit_mark_unavailable", key=self._claim.key, error=repr(exc))
            return
        try:
            await asyncio.wait_for(self._pool.ensure_connection(connection), self._timeout)
        except BaseException as exc:
            await connection.disconnect()
            await self._pool.release(connection)
            if not isinstance(exc, RedisError | OSError | TimeoutError):
                raise
            log.warning("claims.commit_mark_unavailable", key=self._claim.key, error=repr(exc))
            return
        self._connection = connection

    async def write(self, provider: str) -> None:
        """Best effort: if Redis cannot take the mark, the send goes on without it (a crash
        before the ``sent`` mark would then send again, as without this protection)."""
        await self.prepare()
        connection = self._connection
        if connection is None:
            return
        nonce = self._claim.token.rsplit(":", 1)[-1]
        value = f"committing:{self._instance}:{provider}:{nonce}"
        try:
            await connection.send_packed_command(
                connection.pack_command("SET", self._claim.key, value, "PX", self._lease_ms),
                check_health=False,
            )
        except (RedisError, OSError) as exc:
            log.warning("claims.commit_mark_failed", key=self._claim.key, error=repr(exc))
            return
        self._claim.committing = value

    async def settle(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if self._claim.committing is not None:
                await asyncio.wait_for(connection.read_response(), self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("claims.commit_mark_unconfirmed", key=self._claim.key, error=repr(exc))
            await connection.disconnect()
        finally:
            await self._pool.release(connection)


LIVENESS_MS = 15_000
"""How long ``alive:<instance>`` outlives the last heartbeat. Well above the Redis socket timeout
(5 s), so a living holder that only waits on a slow Redis never looks dead; a crashed one is
taken over within this time."""


class InstanceHeartbeat:
    """Keeps ``alive:<instance>`` present while this process runs (see module docstring)."""

    def __init__(
        self, redis: Redis, keys: Keys, instance_id: str, ttl_ms: int = LIVENESS_MS
    ) -> None:
        self._redis = redis
        self._key = keys.instance_alive(instance_id)
        self._ttl_ms = ttl_ms
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._redis.set(self._key, "1", px=self._ttl_ms)
        HEARTBEAT.set_to_current_time()
        self._task = asyncio.create_task(self._beat(), name="instance-heartbeat")

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 5000)
            try:
                await self._redis.set(self._key, "1", px=self._ttl_ms)
                HEARTBEAT.set_to_current_time()
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
