"""Fixtures shared by every test. Infrastructure is real: RabbitMQ, Redis and PostgreSQL.

The fixtures that need a server depend on ``infrastructure`` (which starts a stopped one), so the
fast tier (``-m unit``) runs with no server at all.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from devtools import infra
from libs.storage.redis import Keys
from tests.support.isolation import (
    AMQP_BASE,
    REDIS_URL,
    VhostPool,
    temp_database,
    temp_redis_prefix,
)

# Under ``make test`` (pytest-xdist, ``--dist loadgroup``) the tests that start a whole system of
# processes form two groups, and each group runs on one worker, one test after another; the other
# tests go to whichever worker is free. So at most two whole systems run at once on the two cores.
SYSTEM_GROUPS = {"chaos": "chaos", "e2e": "system", "cluster": "system"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for marker, group in SYSTEM_GROUPS.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.xdist_group(group))
                break


@pytest.fixture(scope="session")
def infrastructure() -> None:
    if os.environ.get("HERALD_TEST_OFFLINE"):
        pytest.fail("this test needs RabbitMQ, Redis or PostgreSQL: it is not a unit test")
    infra.ensure()


@pytest.fixture
async def redis(infrastructure: None) -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(infrastructure: None) -> AsyncIterator[str]:
    async with temp_redis_prefix() as prefix:
        yield prefix


@pytest.fixture
def keys(redis_prefix: str) -> Keys:
    return Keys(redis_prefix)


@pytest.fixture(scope="session")
def vhost_pool(infrastructure: None) -> Iterator[VhostPool]:
    pool = VhostPool()
    yield pool
    pool.close()


@pytest.fixture
async def amqp_url(vhost_pool: VhostPool) -> AsyncIterator[str]:
    """A vhost of its own for this test (declared from scratch, deleted afterwards)."""
    name = await asyncio.to_thread(vhost_pool.take)
    yield f"{AMQP_BASE}/{name}"
    vhost_pool.give_back(name)


@pytest.fixture
async def database_url(infrastructure: None) -> AsyncIterator[str]:
    async with temp_database() as url:
        yield url
