"""Send claims (at most one send, takeover from dead holders) and the shared token bucket."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

from redis.asyncio import Redis

from libs.delivery.claims import ClaimState, CommitMark, InstanceHeartbeat, SendClaims
from libs.storage.ratelimit import TokenBucket
from tests.support.proxy import TcpProxy


async def test_claim_is_exclusive_then_sent_suppresses_repeats(redis, keys):
    a_beat = InstanceHeartbeat(redis, keys, "a")
    await a_beat.start()
    a, b = SendClaims(redis, keys, "a"), SendClaims(redis, keys, "b")
    nid = str(uuid.uuid4())
    first = await a.acquire("email", nid, "email")
    assert first.state is ClaimState.ACQUIRED
    assert (await b.acquire("email", nid, "email")).state is ClaimState.BUSY
    await a.mark_sent(first, "smtp")
    again = await b.acquire("email", nid, "email")
    assert again.state is ClaimState.SENT
    assert again.provider == "smtp"
    await a_beat.stop()


async def test_claim_of_a_dead_holder_is_taken_over_at_once(redis, keys):
    nid = str(uuid.uuid4())
    # holder "ghost" never had a heartbeat: it is dead (crashed before or after claiming)
    ghost = SendClaims(redis, keys, "ghost", lease_ms=600_000)
    assert (await ghost.acquire("push", nid, "dev1")).state is ClaimState.ACQUIRED
    survivor = SendClaims(redis, keys, "survivor")
    assert (await survivor.acquire("push", nid, "dev1")).state is ClaimState.ACQUIRED


async def test_release_only_removes_own_claim(redis, keys):
    beat = InstanceHeartbeat(redis, keys, "a")
    await beat.start()
    a, b = SendClaims(redis, keys, "a"), SendClaims(redis, keys, "b")
    nid = str(uuid.uuid4())
    mine = await a.acquire("email", nid, "email")
    theirs = await b.acquire("email", nid, "email")
    assert theirs.state is ClaimState.BUSY
    await b.release(theirs)  # not b's claim: nothing happens
    assert (await b.acquire("email", nid, "email")).state is ClaimState.BUSY
    await a.release(mine)
    assert (await b.acquire("email", nid, "email")).state is ClaimState.ACQUIRED
    await beat.stop()


async def test_heartbeat_stop_removes_liveness(redis, keys):
    beat = InstanceHeartbeat(redis, keys, "x")
    await beat.start()
    assert await redis.exists(f"{keys.prefix}alive:x")
    await beat.stop()
    assert not await redis.exists(f"{keys.prefix}alive:x")


async def test_token_bucket_allows_burst_then_paces(redis, keys):
    bucket = TokenBucket(redis, keys.rate_limit("t"), rate=20, capacity=5)
    verdicts = [await bucket.try_take() for _ in range(6)]
    assert all(v.allowed for v in verdicts[:5])
    assert not verdicts[5].allowed
    assert 1 <= verdicts[5].retry_after_ms <= 60


async def test_token_bucket_is_shared_by_replicas(redis, keys):
    key = keys.rate_limit("shared")
    replicas = [TokenBucket(redis, key, rate=50, capacity=1) for _ in range(4)]
    started = time.monotonic()
    # 4 "replicas" send 20 in total at a shared 50/s: that takes about 0.4 s, not 0.1 s
    await asyncio.gather(*(r.take(max_wait=5) for r in replicas for _ in range(5)))
    elapsed = time.monotonic() - started
    assert elapsed >= 0.3


async def test_committing_claim_of_a_dead_holder_counts_as_sent(redis, keys):
    """The holder died after writing the end-of-data line: sending again would duplicate."""
    nid = str(uuid.uuid4())
    ghost = SendClaims(redis, keys, "ghost")
    claim = await ghost.acquire("email", nid, "email")
    mark = ghost.commit_mark(claim)
    await mark.write("smtp")
    await mark.settle()
    survivor = SendClaims(redis, keys, "survivor")
    again = await survivor.acquire("email", nid, "email")
    assert again.state is ClaimState.SENT
    assert again.provider == "smtp"
    assert again.assumed


async def test_committing_claim_of_a_live_holder_is_busy_and_release_clears_it(redis, keys):
    beat = InstanceHeartbeat(redis, keys, "alive-one")
    await beat.start()
    holder = SendClaims(redis, keys, "alive-one")
    nid = str(uuid.uuid4())
    claim = await holder.acquire("email", nid, "email")
    mark = holder.commit_mark(claim)
    await mark.write("smtp")
    await mark.settle()
    other = SendClaims(redis, keys, "other")
    assert (await other.acquire("email", nid, "email")).state is ClaimState.BUSY
    await holder.release(claim)  # the relay refused after end-of-data: give the claim up
    assert (await other.acquire("email", nid, "email")).state is ClaimState.ACQUIRED
    await beat.stop()


class Blackhole:
    """A TCP server that accepts connections and never says a word (a Redis that hangs)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Blackhole:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while await reader.read(4096):
                    pass

        self.server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()


async def test_a_commit_mark_that_times_out_gives_its_connection_back(redis, keys):
    async with Blackhole() as hole:
        hanging = Redis.from_url(f"redis://127.0.0.1:{hole.port}/0", max_connections=2)
        claims = SendClaims(redis, keys, "marker", commit_redis=hanging)
        for _ in range(5):  # more than the pool holds: a leak would run it dry
            claim = await claims.acquire("email", str(uuid.uuid4()), "email")
            mark = CommitMark(hanging, claim, "marker", 60_000, timeout=0.2)
            started = time.monotonic()
            await mark.write("smtp")  # prepare times out; the send would go on without a mark
            await mark.settle()
            assert time.monotonic() - started < 2
            assert claim.committing is None
        pool = hanging.connection_pool
        assert len(pool._in_use_connections) == 0  # redis-py's own count of checked-out ones
        await hanging.aclose()


async def test_marking_sent_waits_out_a_redis_outage_instead_of_giving_up(keys):
    proxy = await TcpProxy("127.0.0.1", 6379).start()
    flaky = Redis.from_url(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=1)
    claims = SendClaims(flaky, keys, "a")
    nid = str(uuid.uuid4())
    claim = await claims.acquire("email", nid, "email")
    await proxy.cut()
    marking = asyncio.create_task(claims.mark_sent(claim, "smtp"))
    await asyncio.sleep(1.5)
    assert not marking.done()  # still trying: the mail is out, the mark must land
    await proxy.restore()
    await asyncio.wait_for(marking, 10)
    again = await SendClaims(flaky, keys, "b").acquire(
        "email", claim.key.rsplit(":", 2)[1], "email"
    )
    assert again.state is ClaimState.SENT
    await flaky.aclose()
    await proxy.close()
