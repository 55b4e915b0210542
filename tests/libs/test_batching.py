"""Calls made together (in one loop turn, or while a batch is under way) answered by one batch
request, each caller with its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from libs.clients.batching import Coalescer

pytestmark = pytest.mark.unit


async def test_one_batch_per_loop_turn_each_caller_with_its_own_answer():
    batches: list[list[int]] = []

    async def squares(keys: list[int]) -> dict[int, int | BaseException]:
        batches.append(sorted(keys))
        return {k: ValueError(k) if k == 3 else k * k for k in keys}

    loader: Coalescer[int, int] = Coalescer(squares)
    results = await asyncio.gather(*(loader.load(k) for k in [1, 2, 3, 2]), return_exceptions=True)
    assert results[0] == 1
    assert results[1] == 4
    assert isinstance(results[2], ValueError)
    assert results[3] == 4
    assert batches == [[1, 2, 3]]  # one request, each key once


async def test_a_failed_batch_fails_every_caller_and_the_next_batch_is_fresh():
    calls = 0

    async def flaky(keys: list[str]) -> dict[str, str | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return {k: k.upper() for k in keys}

    loader: Coalescer[str, str] = Coalescer(flaky)
    first = await asyncio.gather(loader.load("a"), loader.load("b"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in first)
    assert await loader.load("a") == "A"


async def test_a_full_batch_goes_at_once_without_waiting_for_the_turn_to_end():
    sizes: list[int] = []

    async def echo(keys: list[int]) -> dict[int, int | BaseException]:
        sizes.append(len(keys))
        return {k: k for k in keys}

    loader: Coalescer[int, int] = Coalescer(echo, max_batch=10)
    assert await asyncio.gather(*(loader.load(k) for k in range(25))) == list(range(25))
    assert sizes == [10, 10, 5]


async def test_keys_asked_while_the_batches_are_under_way_go_together_when_one_ends():
    """At most ``max_in_flight`` requests at once; what is asked meanwhile waits and goes in one
    batch as soon as one ends, so batches grow with the load instead of staying at one key."""
    release: list[asyncio.Event] = []
    batches: list[list[int]] = []
    under_way = 0
    most = 0

    async def slow(keys: list[int]) -> dict[int, int | BaseException]:
        nonlocal under_way, most
        batches.append(sorted(keys))
        under_way += 1
        most = max(most, under_way)
        gate = asyncio.Event()
        release.append(gate)
        await gate.wait()
        under_way -= 1
        return {k: -k for k in keys}

    loader: Coalescer[int, int] = Coalescer(slow, max_in_flight=2)
    first = asyncio.ensure_future(loader.load(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    second = asyncio.ensure_future(loader.load(2))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(loader.load(k)) for k in (3, 4, 5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert batches == [[1], [2]]  # two under way; 3, 4 and 5 wait
    release[0].set()
    assert await first == -1
    for _ in range(5):
        await asyncio.sleep(0)
    assert batches == [[1], [2], [3, 4, 5]]  # went together when the first ended
    for gate in release[1:]:
        gate.set()
    assert await second == -2
    assert await asyncio.gather(*later) == [-3, -4, -5]
    assert most == 2


async def test_a_key_whose_callers_all_gave_up_is_not_asked_for():
    asked: list[list[str]] = []
    gate = asyncio.Event()

    async def load(keys: list[str]) -> dict[str, str | BaseException]:
        asked.append(sorted(keys))
        await gate.wait()
        return {k: k.upper() for k in keys}

    loader: Coalescer[str, str] = Coalescer(load, max_in_flight=1)
    busy = asyncio.ensure_future(loader.load("a"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gave_up = asyncio.ensure_future(loader.load("b"))
    kept = asyncio.ensure_future(loader.load("c"))
    await asyncio.sleep(0)
    gave_up.cancel()
    gate.set()
    assert await busy == "A"
    assert await kept == "C"
    assert asked == [["a"], ["c"]]
