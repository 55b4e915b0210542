"""Isolation: every test gets its own vhost, database and Redis key prefix, and removes them."""

from __future__ import annotations

import functools
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

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


# The shared node's data directory holds its Erlang cookie (readable by root and rabbitmq).
RABBITMQ_HOME = os.environ.get("HERALD_TEST_RABBITMQ_HOME", "/var/lib/rabbitmq")


def _node_name() -> str:
    """The shared node's name, as rabbitmqctl finds it: RABBITMQ_NODENAME, rabbitmq-env.conf's
    NODENAME, or rabbit@ this host."""
    if name := os.environ.get("RABBITMQ_NODENAME"):
        return name
    with suppress(OSError):
        for line in Path("/etc/rabbitmq/rabbitmq-env.conf").read_text().splitlines():
            key, _, value = line.strip().partition("=")
            if key == "NODENAME" and value:
                return value.strip("\"'")
    return f"rabbit@{socket.gethostname().split('.')[0]}"


def _run_erl_call(command: list[str], script: str) -> str | None:
    """What the node answered, or None when it was an error or unreachable (``erl_call`` exits
    0 with ``{error, ...}`` when the expression fails)."""
    env = {**os.environ, "HOME": RABBITMQ_HOME}  # erl_call reads the cookie from $HOME
    try:
        done = subprocess.run(
            command, input=script + "\n", env=env, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 and done.stdout.startswith("{ok") else None


@functools.cache
def _erl_call() -> list[str] | None:
    """``erl_call`` aimed at the shared node, if it is installed and reaches it."""
    binary = shutil.which("erl_call")
    if binary is None:
        return None
    # -R: a node name the peer makes up for each call. Without it every erl_call takes the same
    # default name, and calls that overlap (two pools, or one call right after another) are
    # refused: 19 of 30 failed with ten at once here
    command = [binary, "-R", "-sname", _node_name(), "-e"]
    return command if _run_erl_call(command, "ok.") is not None else None


def _eval(script: str) -> None:
    """Run an Erlang expression on the shared node.

    ``rabbitmqctl eval`` starts an Erlang VM per call: 0.4-1.5 s and half a CPU second, about one
    call per test, a third of the service tiers' CPU. ``erl_call`` (Erlang's C client of the
    distribution protocol, installed with Erlang) does the same in about 10 ms; rabbitmqctl is the
    fallback where it is missing or the node's cookie is not ours to read.
    """
    command = _erl_call()
    if command is None:
        _rabbitmqctl("eval", script)
    elif _run_erl_call(command, script) is None:
        raise subprocess.CalledProcessError(1, command, f"erl_call could not run {script!r}")


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
        _eval(script)
    except subprocess.CalledProcessError:
        for name in names:
            _rabbitmqctl("add_vhost", name)
            _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def _delete_vhosts(names: list[str]) -> None:
    script = '[rabbit_vhost:delete(V, <<"tests">>) || V <- ' + _erlang_list(names) + "], ok."
    try:
        _eval(script)
    except subprocess.CalledProcessError:
        for name in names:
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True)


# A pool's vhosts are named with their creation time: those of a run that was killed are deleted
# by a later run once they are this old (a run of the suite takes minutes; a bench, a quarter of
# an hour). Left to pile up they exhaust the node's file handles: at about 130 the shared node
# stopped answering (docs/decisions.md).
STALE_VHOST_SECONDS = 6 * 3600


def pool_vhost_name(created: float | None = None) -> str:
    stamp = int(time.time() if created is None else created)
    return f"t_vh_{stamp}_{uuid.uuid4().hex[:8]}"


def delete_stale_vhosts(older_than: float = STALE_VHOST_SECONDS) -> None:
    """Delete the pools' vhosts created more than ``older_than`` seconds ago (left by killed runs;
    a running suite's are younger)."""
    script = (
        f"Cutoff = os:system_time(second) - {int(older_than)}, "
        '[rabbit_vhost:delete(V, <<"tests">>) || V <- rabbit_vhost:list_names(), '
        'case re:run(V, "^t_vh_([0-9]+)_", [{capture, all_but_first, list}]) of '
        "{match, [T]} -> list_to_integer(T) < Cutoff; _ -> false end], ok."
    )
    _eval(script)


class VhostPool:
    """Fresh vhosts made ahead of time in batches; used ones deleted in batches, in the background.

    A broker call costs 10 ms through ``erl_call`` but about a second through ``rabbitmqctl`` (the
    fallback, :func:`_eval`): made in the background, creation never waits in a test's own time.
    Each test still gets a vhost nobody used before.
    """

    def __init__(self, batch: int = 8) -> None:
        try:
            delete_stale_vhosts()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            print(f"vhost pool: stale test vhosts not deleted ({exc})", file=sys.stderr)
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
            try:
                self._refill_and_delete()
            except (subprocess.SubprocessError, OSError) as exc:  # the broker said no: try again
                print(f"vhost pool: {exc!r}; trying again in 1 s", file=sys.stderr)
            self._wake.wait(1.0)
            self._wake.clear()

    def _refill_and_delete(self) -> None:
        if self._ready.qsize() < self._batch // 2:
            names = [pool_vhost_name() for _ in range(self._batch)]
            _create_vhosts(names)
            for name in names:
                self._ready.put(name)
        with self._lock:
            used, self._used = self._used, []
        if used:
            _delete_vhosts(used)

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
    """Delete every key under ``prefix``, a thousand a call (after a bench's campaigns, half a
    million keys took minutes one by one)."""
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) == 1000:
            await redis.unlink(*batch)
            batch.clear()
    if batch:
        await redis.unlink(*batch)


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
