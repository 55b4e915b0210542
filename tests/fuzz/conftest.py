"""Fixtures for fuzzing every service's OpenAPI with schemathesis.

Each service runs in-process as an ASGI app against the real RabbitMQ, Redis and PostgreSQL (its
own vhost, key prefix and database for the module). schemathesis runs the app, lifespan included,
on an event loop of its own in a worker thread (``schemathesis.python.asgi``), so what the app
calls over HTTP (the JWKS) is served from a plain thread here, not from pytest's event loop, which
a synchronous schemathesis test blocks.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

from libs.http.auth import JWKS_PATH
from tests.support.isolation import AMQP_BASE, VhostPool, temp_database, temp_redis_prefix
from tests.support.tokens import TokenMint

pytestmark = pytest.mark.fuzz

# Examples per operation; HERALD_FUZZ_EXAMPLES=500 HERALD_FUZZ_RANDOM=1 for a long, exploring run.
EXAMPLES = int(os.environ.get("HERALD_FUZZ_EXAMPLES", "15"))
RANDOM = os.environ.get("HERALD_FUZZ_RANDOM") == "1"
CHECKS = [not_a_server_error, response_schema_conformance]
"""0 responses with status 500, and every documented response as documented."""

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # the same examples every run (a CI failure reproduces), unless HERALD_FUZZ_RANDOM=1
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=list(HealthCheck),
    # no shrinking: a failure is reported as generated (with a curl line to reproduce it) in
    # seconds, where shrinking through live services took minutes
    phases=[Phase.explicit, Phase.generate],
)


@contextmanager
def threaded_jwks(mint: TokenMint) -> Iterator[str]:
    """Serve ``mint``'s JWKS from a thread; yields the base URL (user_service's stand-in)."""
    document = json.dumps(mint.jwks()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 200 if self.path == JWKS_PATH else 404
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def mint() -> TokenMint:
    return TokenMint()


@pytest.fixture(scope="module")
def jwks_url(mint: TokenMint) -> Iterator[str]:
    with threaded_jwks(mint) as url:
        yield url


@pytest.fixture(scope="module")
async def databases(infrastructure: None) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
    """Makes a fresh database per service (``await databases("users")``), dropped at the end."""
    async with AsyncExitStack() as stack:

        async def make(label: str) -> str:
            return await stack.enter_async_context(temp_database(f"fuzz-{label}"))

        yield make


@pytest.fixture(scope="module")
async def module_prefix(infrastructure: None) -> AsyncIterator[str]:
    async with temp_redis_prefix("fuzz") as prefix:
        yield prefix


@pytest.fixture(scope="module")
async def module_amqp(vhost_pool: VhostPool) -> AsyncIterator[str]:
    name = await asyncio.to_thread(vhost_pool.take)
    yield f"{AMQP_BASE}/{name}"
    vhost_pool.give_back(name)


@pytest.fixture(scope="module")
def running_apps(databases: object) -> Iterator[None]:
    """Stops the apps schemathesis started (their lifespans) when the module is done, before
    their databases are dropped (hence the dependency: set up after, torn down before)."""
    yield
    asgi.shutdown_lifespans()
