"""Calls made while a batch request is under way, answered together by the next one.

A consumer holds dozens of messages at once and they reach the same step at about the same
moment: each fetching its user or its render alone costs an HTTP request (and the serving
service a request, a database query, a thread hop). :class:`Coalescer` queues the keys asked for
and makes one ``load_many`` call for them; every caller gets its own value or its own error, as if
it had asked alone.

When to send is decided by the requests under way, not by a timer (:mod:`libs.inflight`).
While fewer than ``max_in_flight`` batches are under way, the keys asked for in one turn of the
event loop go at once (no wait when the system is quiet). Once that many are under way, new keys
wait and go together when one of them ends: under load the batches grow with the load. Keys asked
for one by one as messages arrive made batches of 1.1 renders on average (a campaign of 6,000
emails: 5,709 render requests); waiting for a batch under way is what makes them big. It also
bounds what one process asks of the serving service at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Mapping
from itertools import islice
from typing import Any, Generic, TypeVar

from libs.inflight import Sends

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

LoadMany = Callable[[list[K]], Awaitable[Mapping[K, V | BaseException]]]


class Coalescer(Generic[K, V]):
    def __init__(
        self, load_many: LoadMany[K, V], max_batch: int = 200, max_in_flight: int = 2
    ) -> None:
        self._load_many = load_many
        self._max_batch = max_batch
        self._waiting: dict[K, list[asyncio.Future[V]]] = {}
        self._sends = Sends(self._next_batch, max_in_flight)

    async def load(self, key: K) -> V:
        future: asyncio.Future[V] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(future)
        if len(self._waiting) >= self._max_batch:
            self._sends.send_now()
        else:
            self._sends.wake()
        return await future

    def _next_batch(self) -> Coroutine[Any, Any, None] | None:
        while self._waiting:
            keys = list(islice(self._waiting, self._max_batch))
            batch = {key: self._waiting.pop(key) for key in keys}
            # keys whose callers all stopped waiting (cancelled) are not asked for
            batch = {k: fs for k, fs in batch.items() if not all(f.done() for f in fs)}
            if batch:
                return self._answer(batch)
        return None

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
