"""Fixtures shared by every test. Infrastructure is real: RabbitMQ, Redis and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from devtools import infra
from libs.redis import Keys
from tests.support.isolation import (
    REDIS_URL,
    temp_database,
    temp_redis_prefix,
    temp_vhost,
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


@pytest.fixture
async def amqp_url() -> AsyncIterator[str]:
    async with temp_vhost() as url:
        yield url


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    async with temp_database() as url:
        yield url
