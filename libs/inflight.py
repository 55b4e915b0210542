"""Sending what waits, with at most a few sends under way: the batching both the Redis
auto-pipeline (``libs.storage.redis``) and the batch-request coalescer (``libs.clients.batching``)
use.

A caller queues its work where the owner keeps it and calls :meth:`Sends.wake`. While fewer than
``max_in_flight`` sends are under way, what waits goes on the next turn of the event loop (what
the turn collected goes together; nothing waits when the system is quiet). Once that many are
under way, what is queued meanwhile waits and goes together when one of them ends: under load the
batches grow with the load, with no timer to add its delay to quiet calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

NextSend = Callable[[], Coroutine[Any, Any, None] | None]
"""Takes what waits off the owner's queue and returns the coroutine sending it (None: nothing
waits)."""


class Sends:
    def __init__(self, next_send: NextSend, max_in_flight: int) -> None:
        self._next_send = next_send
        self.max_in_flight = max_in_flight
        self._running: set[asyncio.Task[None]] = set()
        self._scheduled = False

    def wake(self) -> None:
        """Something was queued: send on the next loop turn, unless the sends under way are as
        many as allowed (the first to end sends it)."""
        if not self._scheduled and len(self._running) < self.max_in_flight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.send_now)

    def send_now(self) -> None:
        """Start sends of what waits, as many as allowed (a full batch need not wait for the
        turn to end)."""
        self._scheduled = False
        while len(self._running) < self.max_in_flight:
            send = self._next_send()
            if send is None:
                return
            task = asyncio.get_running_loop().create_task(send)
            self._running.add(task)
            task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self.wake()
