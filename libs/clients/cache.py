"""Read-through cache in Redis with versioned keys and stale fallback.

The owning service bumps ``cachever:<kind>:<id>`` after it commits a change; readers always read
the current version's key, so a change is visible to the next read, and a reader that fetched old
data just before the change stores it under the old version, where nobody looks. Entries are fresh
for ``fresh_ttl`` seconds; after that they are refetched, but kept for ``stale_ttl`` so that a
consumer keeps working from cache while the owning service is unreachable.

An entry most likely read once (a render with one recipient's variables) may be stored for a
short trial instead (``trial_ttl``): it gets ``stale_ttl`` only when it is read again. A campaign
of personalised emails otherwise left every render in Redis for a day.

Concurrent lookups of one entry in a process share a single read (and, on a miss, a single
fetch): a batch of 1,000 notifications for one template costs one lookup, not a stampede of
1,000 fetches on a cold cache or right after a change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import orjson
import structlog
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from libs.clients.errors import UpstreamUnavailable
from libs.storage.redis import Keys, lua_script

log = structlog.get_logger(__name__)

CACHE_LOOKUPS = Counter(
    "cache_lookups_total", "Cache lookups by kind and result (hit, miss, stale)", ["kind", "result"]
)

T = TypeVar("T")
V = TypeVar("V")

_READ = lua_script(__file__, "cache_read.lua")
_BUMP = lua_script(__file__, "cache_bump.lua")

VERSION_KEEP_SECONDS = 7 * 86400


class VersionedCache:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._read = redis.register_script(_READ)
        self._bump = redis.register_script(_BUMP)
        self._inflight: dict[tuple[str, str, str], asyncio.Future[Any]] = {}

    async def read(
        self, kind: str, ident: str, extra: str = "", keep_on_use: int = 0
    ) -> tuple[int, dict[str, Any] | None]:
        """The current version and its entry; ``keep_on_use``: the entry, if there is one, lives
        that long from now (for entries stored on trial)."""
        version_raw, raw = await self._read(
            keys=[self._keys.cache_version(kind, ident)],
            args=[
                self._keys.cache_stem(kind, ident),
                self._keys.cache_suffix(extra),
                VERSION_KEEP_SECONDS,
                keep_on_use,
            ],
        )
        version = int(version_raw)
        return version, (orjson.loads(raw) if raw else None)

    async def write(
        self, kind: str, ident: str, version: int, data: Any, stale_ttl: int, extra: str = ""
    ) -> None:
        entry = orjson.dumps({"data": data, "fetched_at": time.time()})
        await self._redis.set(self._keys.cache(kind, ident, version, extra), entry, ex=stale_ttl)

    async def current_versions(self, kind: str, idents: list[str]) -> dict[str, int | None]:
        """The current version of each ident (None where no version is known), or all None if
        Redis cannot answer (the caller then does without the cache)."""
        try:
            raw = await self._redis.mget([self._keys.cache_version(kind, i) for i in idents])
        except (RedisError, OSError) as exc:
            log.warning("cache.versions_unavailable", kind=kind, error=repr(exc))
            return dict.fromkeys(idents)
        return {i: int(v) if v is not None else None for i, v in zip(idents, raw, strict=True)}

    async def bump(self, kind: str, ident: str, keep_seconds: int = VERSION_KEEP_SECONDS) -> int:
        """Invalidate every cached entry of ``kind``/``ident`` (called by the owning service)."""
        version = await self._bump(
            keys=[self._keys.cache_version(kind, ident)], args=[keep_seconds]
        )
        return int(version)

    def get_through(
        self,
        kind: str,
        ident: str,
        fetch: Callable[[], Awaitable[T]],
        *,
        fresh_ttl: int,
        stale_ttl: int,
        extra: str = "",
        trial_ttl: int | None = None,
    ) -> asyncio.Future[T]:
        """A fresh cached value, or fetched and cached, or else a stale one. Callers asking for
        the same entry meanwhile wait for this one's answer. The lookup starts at the call:
        lookups started one after another, before any is awaited, read Redis in one round trip
        (with whatever else the caller sends in that loop turn). The future is the caller's
        own: cancelling it leaves the lookup to the others.

        ``trial_ttl``: a fetched value is kept that long, and ``stale_ttl`` only once it is read
        again."""
        key = (kind, ident, extra)
        shared = self._inflight.get(key)
        if shared is None:
            shared = asyncio.ensure_future(
                self._get_through(
                    kind,
                    ident,
                    fetch,
                    fresh_ttl=fresh_ttl,
                    stale_ttl=stale_ttl,
                    extra=extra,
                    trial_ttl=trial_ttl,
                )
            )
            self._inflight[key] = shared
            shared.add_done_callback(lambda done: self._finished(key, done))
        # shielded: one caller's cancellation must not cancel the others' lookup
        return asyncio.shield(shared)

    def _finished(self, key: tuple[str, str, str], done: asyncio.Future[Any]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if not done.cancelled():
            done.exception()  # retrieved, even if every caller was cancelled meanwhile

    async def _get_through(
        self,
        kind: str,
        ident: str,
        fetch: Callable[[], Awaitable[T]],
        *,
        fresh_ttl: int,
        stale_ttl: int,
        extra: str,
        trial_ttl: int | None,
    ) -> T:
        version, entry = await self.read(kind, ident, extra, stale_ttl if trial_ttl else 0)
        if entry is not None and time.time() - float(entry["fetched_at"]) < fresh_ttl:
            CACHE_LOOKUPS.labels(kind, "hit").inc()
            return entry["data"]  # type: ignore[no-any-return]
        try:
            data = await fetch()
        except UpstreamUnavailable as exc:
            if entry is None:
                CACHE_LOOKUPS.labels(kind, "miss").inc()
                raise
            CACHE_LOOKUPS.labels(kind, "stale").inc()
            log.warning("cache.serving_stale", kind=kind, ident=ident, error=str(exc))
            return entry["data"]  # type: ignore[no-any-return]
        CACHE_LOOKUPS.labels(kind, "miss").inc()
        await self.write(kind, ident, version, data, trial_ttl or stale_ttl, extra)
        return data


def _reraise(exc: BaseException) -> NoReturn:
    raise exc


def mapped(
    source: asyncio.Future[T],
    convert: Callable[[T], V],
    recover: Callable[[BaseException], V] = _reraise,
) -> asyncio.Future[V]:
    """A future of ``convert(result)``, or of ``recover(exception)`` (which raises what it does
    not turn into a value), once ``source`` is done: a lookup's answer in the caller's terms,
    without a task. ``source``'s outcome is always retrieved, even if nobody awaits the result."""
    target: asyncio.Future[V] = source.get_loop().create_future()

    def settle(done: asyncio.Future[T]) -> None:
        if done.cancelled():
            target.cancel()
            return
        error = done.exception()
        if target.done():  # given up on (cancelled) meanwhile
            return
        try:
            value = convert(done.result()) if error is None else recover(error)
        except BaseException as exc:  # what the source raised, or what converting it did
            target.set_exception(exc)
        else:
            target.set_result(value)

    source.add_done_callback(settle)
    return target
