"""Small helpers for tests that look at queues directly."""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection


async def queue_depth(connection: AbstractRobustConnection, queue: str) -> int:
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def get_one(
    connection: AbstractRobustConnection, queue: str, timeout: float = 10.0
) -> AbstractIncomingMessage:
    """Wait for one message on ``queue`` and ack it."""
    channel = await connection.channel()
    try:
        q = await channel.get_queue(queue, ensure=False)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            message = await q.get(no_ack=False, fail=False)
            if message is not None:
                await message.ack()
                return message
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"nothing on {queue} within {timeout}s")
            await asyncio.sleep(0.05)
    finally:
        await channel.close()


async def publish_raw(
    connection: AbstractRobustConnection,
    exchange: str,
    routing_key: str,
    body: bytes,
    **properties: Any,
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    try:
        target = (
            await channel.get_exchange(exchange, ensure=False)
            if exchange
            else (channel.default_exchange)
        )
        await target.publish(aio_pika.Message(body, **properties), routing_key)
    finally:
        await channel.close()
