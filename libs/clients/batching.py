"""Calls made in one turn of the event loop, answered by one batch request.

A consumer holds dozens of messages at once and they reach the same step at about the same
moment: each fetching its user or its render alone costs an HTTP request (and the serving
service a request, a database query, a thread hop). :class:`Coalescer` queues the keys asked for
in one loop turn and makes one ``load_many`` call for all of them; every caller gets its own
value or its own error, as if it had asked alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

LoadMany = Callable[[list[K]], Awaitable[Mapping[K, V | BaseException]]]


class Coalescer(Generic[K, V]):
    def __init__(self, load_many: LoadMany[K, V], max_batch: int = 200) -> None:
        self._load_many = load_many
        self._max_batch = max_batch
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    async def load(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        if len(self._waiting) >= self._max_batch:
            self._dispatch()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await future

    def _dispatch(self) -> None:
        self._scheduled = False
        if not self._waiting:
            return
        batch, self._waiting = self._waiting, {}
        task = asyncio.get_running_loop().create_task(self._answer(batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _answer(self, batch: dict[K, list[asyncio.Future[V]]]) -> None:
        try:
            found = await self._load_many(list(batch))
        except BaseException as exc:  # the request failed as a whole: every caller hears it
            for futures in batch.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for key, futures in batch.items():
            outcome = found.get(key, KeyError(key))
            for future in futures:
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
