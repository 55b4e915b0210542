"""Isolation: every test gets its own vhost, database and Redis key prefix, and removes them."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.asyncio import Redis

from libs.db import drop_database, ensure_database

PG_BASE = "postgresql+asyncpg://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_BASE = "amqp://guest:guest@127.0.0.1:5672"


def unique(label: str) -> str:
    return f"t_{label}_{uuid.uuid4().hex[:10]}"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@asynccontextmanager
async def temp_vhost(label: str = "vh") -> AsyncIterator[str]:
    """A fresh vhost on the machine's RabbitMQ; yields its AMQP URL and deletes it afterwards."""
    name = unique(label)
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    try:
        yield f"{AMQP_BASE}/{name}"
    finally:
        _rabbitmqctl("delete_vhost", name)


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
