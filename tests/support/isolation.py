"""Isolation: every test gets its own vhost, database and Redis key prefix, and removes them."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from libs.storage.db import drop_database, ensure_database

# Where the tests find the servers (the machine's own by default).
PG_BASE = os.environ.get("HERALD_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("HERALD_TEST_REDIS", "redis://127.0.0.1:6379/0")
AMQP_BASE = os.environ.get("HERALD_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")


def unique(label: str) -> str:
    return f"t_{label}_{uuid.uuid4().hex[:10]}"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def _erlang_list(names: list[str]) -> str:
    return "[" + ", ".join(f'<<"{n}">>' for n in names) + "]"


def _create_vhosts(names: list[str]) -> None:
    """Create vhosts (with guest permissions) in one broker call; one call each as a fallback."""
    script = (
        '[begin rabbit_vhost:add(V, <<"tests">>), '
        'rabbit_auth_backend_internal:set_permissions(<<"guest">>, V, <<".*">>, '
        '<<".*">>, <<".*">>, <<"tests">>) end || V <- ' + _erlang_list(names) + "], ok."
    )
    try:
        _rabbitmqctl("eval", script)
    except subprocess.CalledProcessError:
        for name in names:
            _rabbitmqctl("add_vhost", name)
            _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def _delete_vhosts(names: list[str]) -> None:
    script = '[rabbit_vhost:delete(V, <<"tests">>) || V <- ' + _erlang_list(names) + "], ok."
    try:
        _rabbitmqctl("eval", script)
    except subprocess.CalledProcessError:
        for name in names:
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True)


class VhostPool:
    """Fresh vhosts made ahead of time in batches; used ones deleted in batches, in the background.

    ``rabbitmqctl`` starts an Erlang VM per call (about a second here), so creating a vhost in the
    test's own time would dominate the suite. Each test still gets a vhost nobody used before.
    """

    def __init__(self, batch: int = 8) -> None:
        self._batch = batch
        self._ready: queue.Queue[str] = queue.Queue()
        self._used: list[str] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            if self._ready.qsize() < self._batch // 2:
                names = [unique("vh") for _ in range(self._batch)]
                _create_vhosts(names)
                for name in names:
                    self._ready.put(name)
            with self._lock:
                used, self._used = self._used, []
            if used:
                _delete_vhosts(used)
            self._wake.wait(1.0)
            self._wake.clear()

    def take(self, timeout: float = 60) -> str:
        name = self._ready.get(timeout=timeout)
        self._wake.set()
        return name

    def give_back(self, name: str) -> None:
        """Delete a used vhost later, without making the test wait for it."""
        with self._lock:
            self._used.append(name)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._worker.join(timeout=60)
        leftover: list[str] = []
        while not self._ready.empty():
            leftover.append(self._ready.get())
        with self._lock:
            leftover += self._used
            self._used = []
        if leftover:
            _delete_vhosts(leftover)


@asynccontextmanager
async def temp_database(label: str = "db") -> AsyncIterator[str]:
    """A fresh PostgreSQL database; yields its SQLAlchemy URL and drops it afterwards."""
    url = f"{PG_BASE}/{unique(label)}"
    await ensure_database(url)
    try:
        yield url
    finally:
        await drop_database(url)


async def delete_prefix(redis: Redis, prefix: str) -> None:
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        await redis.delete(key)


@asynccontextmanager
async def temp_redis_prefix(label: str = "r") -> AsyncIterator[str]:
    prefix = f"{unique(label)}:"
    try:
        yield prefix
    finally:
        client = Redis.from_url(REDIS_URL)
        try:
            await delete_prefix(client, prefix)
        finally:
            await client.aclose()
