"""VersionedCache against Redis: concurrent lookups of one entry share one read and one fetch."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from libs.clients.cache import VersionedCache
from libs.clients.errors import UpstreamNotFound
from libs.storage.redis import Keys


async def test_a_cold_entry_asked_for_a_thousand_times_at_once_is_fetched_once(
    redis: Redis, keys: Keys
) -> None:
    cache = VersionedCache(redis, keys)
    fetches = 0

    async def fetch() -> dict[str, str]:
        nonlocal fetches
        fetches += 1
        await asyncio.sleep(0.05)  # the owning service answering
        return {"type": "email"}

    async def lookup(code: str) -> dict[str, str]:
        return await cache.get_through("template", code, fetch, fresh_ttl=60, stale_ttl=600)

    answers = await asyncio.gather(*(lookup("welcome") for _ in range(1000)))
    assert answers == [{"type": "email"}] * 1000
    assert fetches == 1
    await asyncio.gather(*(lookup("other") for _ in range(10)), lookup("welcome"))
    assert fetches == 2  # one more entry; "welcome" is now a hit
    # after a change (a version bump) the next lookups fetch again, once
    await cache.bump("template", "welcome")
    await asyncio.gather(*(lookup("welcome") for _ in range(50)))
    assert fetches == 3


async def test_a_shared_failure_reaches_every_caller_and_a_cancelled_caller_leaves_the_rest(
    redis: Redis, keys: Keys
) -> None:
    cache = VersionedCache(redis, keys)
    release = asyncio.Event()

    async def missing() -> dict[str, str]:
        await release.wait()
        raise UpstreamNotFound("template_service", "no such template", 404)

    async def lookup() -> dict[str, str]:
        return await cache.get_through("template", "gone", missing, fresh_ttl=60, stale_ttl=600)

    callers = [asyncio.create_task(lookup()) for _ in range(5)]
    await asyncio.sleep(0.01)
    callers[0].cancel()
    release.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(isinstance(r, UpstreamNotFound) for r in results[1:])
    with pytest.raises(UpstreamNotFound):  # nothing is kept of a failed lookup
        await lookup()


async def test_lookups_started_together_share_one_round_trip_and_answer_each_in_its_terms(
    keys: Keys,
) -> None:
    """What the gateway does before claiming a request id: the user and the template lookups
    started at once, read in one pipeline, each mapped to its own answer or error."""
    from libs.clients.cache import mapped
    from libs.storage.redis import create_redis
    from tests.support.isolation import REDIS_URL

    redis = create_redis(REDIS_URL, auto_pipeline=True)
    cache = VersionedCache(redis, keys)
    sent: list[int] = []
    send = redis._send  # type: ignore[attr-defined]

    async def counted(batch: list[object]) -> None:
        sent.append(len(batch))
        await send(batch)

    redis._send = counted  # type: ignore[attr-defined]

    async def fetch_found() -> dict[str, str]:
        return {"type": "push"}

    async def fetch_missing() -> dict[str, str]:
        raise UpstreamNotFound("user_service", "no such user", 404)

    def absent(exc: BaseException) -> bool:
        if isinstance(exc, UpstreamNotFound):
            return False
        raise exc

    try:
        for _ in range(2):  # cold (fetched), then warm (read from Redis)
            sent.clear()
            kind = mapped(
                cache.get_through("template", "t1", fetch_found, fresh_ttl=60, stale_ttl=600),
                lambda data: data["type"],
            )
            known = mapped(
                cache.get_through("prefs", "u1", fetch_missing, fresh_ttl=60, stale_ttl=600),
                lambda _: True,
                absent,
            )
            broken = mapped(
                cache.get_through("prefs", "u2", fetch_found, fresh_ttl=60, stale_ttl=600),
                lambda _: 1 / 0,
            )
            assert await kind == "push"
            assert await known is False
            with pytest.raises(ZeroDivisionError):
                await broken
            assert sent[0] == 3  # the three cache reads went to Redis together
        # a caller giving up on its answer leaves the lookup to finish for the others
        given_up = cache.get_through("template", "t2", fetch_found, fresh_ttl=60, stale_ttl=600)
        mine = mapped(given_up, lambda data: data["type"])
        mine.cancel()
        assert await given_up == {"type": "push"}
        assert mine.cancelled()
    finally:
        await redis.aclose()


async def test_an_entry_stored_on_trial_stays_only_once_it_is_read_again(
    redis: Redis, keys: Keys
) -> None:
    """Renders carry one recipient's variables and are mostly read once: stored for a short
    trial, they leave Redis soon after a campaign instead of a day later; one read again (the
    same render for many recipients, a retry) is kept as long as any entry."""
    cache = VersionedCache(redis, keys)
    fetches = 0

    async def fetch() -> dict[str, str]:
        nonlocal fetches
        fetches += 1
        return {"body": "Hello"}

    async def lookup(extra: str, trial: int | None) -> dict[str, str]:
        return await cache.get_through(
            "template", "news", fetch, fresh_ttl=60, stale_ttl=86400, extra=extra, trial_ttl=trial
        )

    def entry(extra: str) -> str:
        return keys.cache("template", "news", version, extra)

    assert await lookup("once", 120) == {"body": "Hello"}
    version, _ = await cache.read("template", "news", "once")
    assert 0 < await redis.ttl(entry("once")) <= 120  # on trial
    assert await lookup("once", 120) == {"body": "Hello"}  # read again: a hit ...
    assert fetches == 1
    assert await redis.ttl(entry("once")) > 86000  # ... so it stays
    await lookup("always", None)
    assert await redis.ttl(entry("always")) > 86000  # no trial: kept from the start
    await redis.expire(entry("always"), 50_000)
    await lookup("always", None)
    assert await redis.ttl(entry("always")) <= 50_000  # and a read leaves it alone
