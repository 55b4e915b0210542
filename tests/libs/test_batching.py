"""Calls made in one loop turn answered by one batch request, each caller with its own outcome."""

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
