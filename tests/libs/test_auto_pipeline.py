"""Redis calls made together (in one loop turn, or while pipelines are under way) go out as one
pipeline, each with its own result."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from libs.storage.redis import AutoPipelineRedis, create_redis
from tests.support.proxy import TcpProxy


@pytest.fixture
async def auto(infrastructure):
    client = create_redis("redis://127.0.0.1:6379/0", auto_pipeline=True)
    assert isinstance(client, AutoPipelineRedis)
    yield client
    await client.aclose()


async def test_concurrent_calls_get_their_own_results_in_few_round_trips(auto, keys, redis):
    sent: list[int] = []
    original = auto.pipeline

    def counting_pipeline(*args, **kwargs):
        pipe = original(*args, **kwargs)
        sent.append(1)
        return pipe

    auto.pipeline = counting_pipeline
    await asyncio.gather(*(auto.set(f"{keys.prefix}k{i}", i) for i in range(100)))
    values = await asyncio.gather(*(auto.get(f"{keys.prefix}k{i}") for i in range(100)))
    assert values == [str(i).encode() for i in range(100)]
    assert len(sent) == 2  # two loop turns, two pipelines, for 200 calls
    assert await redis.get(f"{keys.prefix}k42") == b"42"


async def test_scripts_work_through_it_even_when_redis_has_forgotten_them(auto, keys, redis):
    script = auto.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    await redis.script_flush()
    totals = await asyncio.gather(*(script(keys=[f"{keys.prefix}n"], args=[1]) for _ in range(20)))
    assert sorted(totals) == list(range(1, 21))


async def test_a_failing_command_fails_only_its_caller(auto, keys):
    await auto.set(f"{keys.prefix}text", "x")
    results: list[object] = await asyncio.gather(
        auto.set(f"{keys.prefix}other", "y"),
        auto.hgetall(f"{keys.prefix}text"),  # WRONGTYPE
        return_exceptions=True,
    )
    assert results[0] is True
    assert isinstance(results[1], ResponseError)


async def test_an_outage_fails_every_caller_and_the_client_recovers(keys):
    proxy = await TcpProxy("127.0.0.1", 6379).start()
    client = create_redis(f"redis://127.0.0.1:{proxy.port}/0", auto_pipeline=True)
    try:
        await client.set(f"{keys.prefix}up", 1)
        await proxy.cut()
        results = await asyncio.gather(
            *(client.get(f"{keys.prefix}up") for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, RedisConnectionError) for r in results)
        await proxy.restore()
        assert await client.get(f"{keys.prefix}up") == b"1"
    finally:
        await client.aclose()
        await proxy.close()


async def test_calls_made_while_two_pipelines_are_under_way_go_together_when_one_ends(
    auto, keys, redis
):
    gate = asyncio.Event()
    pipelines: list[int] = []  # commands in each pipeline sent
    original = auto.pipeline

    def held_pipeline(*args, **kwargs):
        pipe = original(*args, **kwargs)
        execute = pipe.execute

        async def when_released(*a, **k):
            pipelines.append(len(pipe.command_stack))
            await gate.wait()
            return await execute(*a, **k)

        pipe.execute = when_released
        return pipe

    auto.pipeline = held_pipeline

    async def turns(n: int) -> None:
        for _ in range(n):
            await asyncio.sleep(0)

    first = asyncio.gather(*(auto.set(f"{keys.prefix}a{i}", i) for i in range(2)))
    await turns(3)
    second = asyncio.gather(*(auto.set(f"{keys.prefix}b{i}", i) for i in range(3)))
    await turns(3)
    later = []
    for i in range(10):  # one call a loop turn: each would have been a round trip of its own
        later.append(asyncio.ensure_future(auto.set(f"{keys.prefix}c{i}", i)))
        await turns(1)
    await turns(3)
    assert pipelines == [2, 3]  # two under way; the ten wait
    gate.set()
    assert await first == [True, True]
    assert await second == [True, True, True]
    assert await asyncio.gather(*later) == [True] * 10
    assert pipelines == [2, 3, 10]
    assert await redis.get(f"{keys.prefix}c9") == b"9"
