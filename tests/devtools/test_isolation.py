"""The suite's own isolation: the vhost pool's broker calls, the cleanup of killed runs' vhosts,
and test servers that fail without breaking the run.

Against the shared RabbitMQ, touching only vhosts these tests create.
"""

from __future__ import annotations

import asyncio
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aio_pika
import aiormq
import pytest
from aiormq.exceptions import AMQPError
from fastapi import FastAPI

from tests.support import isolation
from tests.support.isolation import (
    AMQP_BASE,
    STALE_VHOST_SECONDS,
    VhostPool,
    _create_vhosts,
    _delete_vhosts,
    delete_stale_vhosts,
    pool_vhost_name,
)
from tests.support.servers import live_server


async def _reachable(vhost: str) -> bool:
    try:  # aiormq's connection alone: a refused aio-pika connection warns when collected
        connection = await asyncio.wait_for(aiormq.connect(f"{AMQP_BASE}/{vhost}"), 10)
    except AMQPError:  # the broker closes the connection: no such vhost
        return False
    await connection.close()
    return True


async def test_a_pool_vhost_is_fresh_usable_and_deleted_after_use(infrastructure):
    pool = VhostPool(batch=2)
    try:
        name = await asyncio.to_thread(pool.take)
        connection = await aio_pika.connect(f"{AMQP_BASE}/{name}")
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue("q", passive=False)
            assert queue.declaration_result.message_count == 0
        pool.give_back(name)
    finally:
        await asyncio.to_thread(pool.close)
    assert not await _reachable(name)


async def test_vhosts_left_by_a_killed_run_are_deleted_once_stale(infrastructure):
    # Aged just short of the pools' own cutoff and swept with an earlier one, so that a pool
    # starting meanwhile in another worker or run (which sweeps too) leaves them to this test.
    now = time.time()
    cutoff = STALE_VHOST_SECONDS - 1800
    stale = pool_vhost_name(now - cutoff - 60)
    recent = pool_vhost_name(now - cutoff + 600)  # a long run still using it
    await asyncio.to_thread(_create_vhosts, [stale, recent])
    try:
        assert await _reachable(stale)
        await asyncio.to_thread(delete_stale_vhosts, cutoff)
        assert not await _reachable(stale)
        assert await _reachable(recent)
    finally:
        await asyncio.to_thread(_delete_vhosts, [stale, recent])


async def test_without_the_nodes_cookie_the_calls_go_through_rabbitmqctl(
    infrastructure, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """erl_call needs the node's cookie; a developer who cannot read it still gets vhosts."""
    name = pool_vhost_name()
    try:
        with monkeypatch.context() as patched:
            patched.setattr(isolation, "RABBITMQ_HOME", str(tmp_path))
            isolation._erl_call.cache_clear()
            assert isolation._erl_call() is None
            await asyncio.to_thread(_create_vhosts, [name])
            assert await _reachable(name)
            await asyncio.to_thread(_delete_vhosts, [name])
            assert not await _reachable(name)
    finally:
        # the cookie's place restored first, then forgotten what was found without it: the
        # session's pool goes on through erl_call
        isolation._erl_call.cache_clear()
    assert isolation._erl_call() is not None


def test_broker_calls_at_the_same_time_all_succeed(infrastructure):
    """Two pools (or a pool and the stale cleanup) may call the node at once: each erl_call asks
    the node for a name of its own (-R). With the shared default name, 19 of 30 failed here.
    (Where erl_call cannot reach the node, the calls go through rabbitmqctl, and must hold too.)"""
    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(lambda _: isolation._eval("ok."), range(20)))
    assert outcomes == [None] * 20


async def test_a_live_server_on_a_taken_port_fails_as_an_error_not_an_exit():
    """uvicorn exits the process (SystemExit) when it cannot bind; raised from a fixture that
    broke pytest's bookkeeping, and later tests got the failed test's fixtures (one vhost for
    twenty tests). live_server binds the socket itself: a taken port is an OSError, and without
    a port nothing can take the one picked before uvicorn serves on it."""
    app = FastAPI()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            async with live_server(app, port=taken.getsockname()[1]):
                pass
    async with live_server(app) as first, live_server(app) as second:
        assert first != second
