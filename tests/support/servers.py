"""Run an ASGI app for a test: in-process with its lifespan, or served by uvicorn on a free port."""

from __future__ import annotations

import asyncio
import functools
import random
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from libs.http.state import STATE_KEY

# Ports handed to a server that binds later (a service process, a sink): from below the kernel's
# ephemeral range, so that no outgoing connection opened meanwhile (each service opens several to
# Redis, RabbitMQ and PostgreSQL) can take one between its choice here and the server binding it;
# at random, so that test workers running side by side (make test runs two) rarely pick the same;
# and never one this process handed out before.
_LISTEN_PORTS = range(20000, 32768)
# The shared broker listens on 5672 and 25672; RabbitMQ's CLI tools take their own distribution
# port from 35672-35682 (the default dist port + 10000). A test's server (a RabbitMQ node of its
# own too) must not pick any of them, even where the range above falls back to the kernel's choice.
RESERVED_PORTS = {5672, 25672, *range(35672, 35683)}
_handed_out: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now, for a server to bind."""
    low = _ephemeral_low()
    candidates = range(_LISTEN_PORTS.start, min(_LISTEN_PORTS.stop, low))
    for _ in range(200):
        port = random.choice(candidates) if len(candidates) > 1000 else _kernel_port()
        if port in _handed_out or port in RESERVED_PORTS:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port found")


def _kernel_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@functools.cache
def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


class AppClient(httpx.AsyncClient):
    """An in-process client that also holds the service state the app's lifespan yielded."""

    state: Any
    asgi: ASGIApp

    def calling_from(self, host: str) -> httpx.AsyncClient:
        """Another client of the same running app, whose requests come from address ``host``
        (the default client's is 127.0.0.1)."""
        transport = httpx.ASGITransport(app=self.asgi, client=(host, 40000))
        return httpx.AsyncClient(transport=transport, base_url=self.base_url)


def with_lifespan_state(app: ASGIApp, state: Mapping[str, Any]) -> ASGIApp:
    """Give every request a copy of the lifespan's state, as an ASGI server does."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": dict(state)}, receive, send)

    return asgi


@asynccontextmanager
async def app_client(app: FastAPI) -> AsyncIterator[AppClient]:
    """An httpx client talking to ``app`` in-process, with the app's lifespan running."""
    async with app.router.lifespan_context(app) as lifespan_state:
        state = dict(lifespan_state or {})
        asgi = with_lifespan_state(app, state)
        transport = httpx.ASGITransport(app=asgi)
        async with AppClient(transport=transport, base_url="http://testserver") as client:
            client.state = state.get(STATE_KEY)
            client.asgi = asgi
            yield client


@asynccontextmanager
async def live_server(
    app: FastAPI | ASGIApp, port: int | None = None, *, lifespan: Literal["on", "off"] = "on"
) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1; yields the base URL. ``lifespan="off"`` serves
    an app already running in-process (an :class:`AppClient`'s ``asgi``) over a real socket.

    The socket is bound here (on ``port``, or on one the system picks) and handed to uvicorn. A
    port found free and bound later can be taken in between (by any process's outgoing
    connection), and uvicorn answers a failed bind with ``sys.exit``: asyncio lets SystemExit
    through the event loop, and raised from a fixture it broke pytest's bookkeeping (later tests
    got the failed test's fixtures: one vhost for twenty tests). Here a taken port is an OSError.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port or 0))
    except OSError:
        sock.close()
        raise
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan=lifespan)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            if task.done():
                task.result()  # raises the start-up error
                raise OSError(f"uvicorn stopped at start-up on 127.0.0.1:{port}")
            await asyncio.sleep(0.01)
        else:
            raise TimeoutError("uvicorn did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()
