"""Fixtures shared by every test. Infrastructure is real: RabbitMQ, Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
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


@pytest.fixture(scope="session", autouse=True)
def _infrastructure() -> None:
    infra.ensure()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    async with temp_redis_prefix() as prefix:
        yield prefix


@pytest.fixture
def keys(redis_prefix: str) -> Keys:
    return Keys(redis_prefix)


@pytest.fixture(scope="session")
def vhost_pool(_infrastructure: None) -> Iterator[VhostPool]:
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
async def database_url() -> AsyncIterator[str]:
    async with temp_database() as url:
        yield url
