"""Calls made while a batch request is under way, answered together by the next one.

A consumer holds dozens of messages at once and they reach the same step at about the same
moment: each fetching its user or its render alone costs an HTTP request (and the serving
service a request, a database query, a thread hop). :class:`Coalescer` queues the keys asked for
and makes one ``load_many`` call for them; every caller gets its own value or its own error, as if
it had asked alone.

When to send is decided by the requests under way, not by a timer. While fewer than
``max_in_flight`` batches are under way, the keys asked for in one turn of the event loop go at
once (no wait when the system is quiet). Once that many are under way, new keys wait and go
together when one of them ends: under load the batches grow with the load. Keys asked for one by
one as messages arrive made batches of 1.1 renders on average (a campaign of 6,000 emails: 5,709
render requests); waiting for a batch under way is what makes them big. It also bounds what one
process asks of the serving service at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Mapping
from itertools import islice
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

LoadMany = Callable[[list[K]], Awaitable[Mapping[K, V | BaseException]]]


class Coalescer(Generic[K, V]):
    def __init__(
        self, load_many: LoadMany[K, V], max_batch: int = 200, max_in_flight: int = 2
    ) -> None:
        self._load_many = load_many
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    async def load(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        self._waiting.setdefault(key, []).append(future)
        if len(self._running) >= self._max_in_flight:
            pass  # the first batch under way to end sends what waits
        elif len(self._waiting) >= self._max_batch:
            self._dispatch()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await future

    def _dispatch(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._waiting and len(self._running) < self._max_in_flight:
            batch = {
                key: self._waiting.pop(key) for key in list(islice(self._waiting, self._max_batch))
            }
            # keys whose callers all stopped waiting (cancelled) are not asked for
            batch = {k: fs for k, fs in batch.items() if not all(f.done() for f in fs)}
            if not batch:
                continue
            task = loop.create_task(self._answer(batch))
            self._running.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._waiting and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

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
