"""Factories and helpers for dlq_service tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
from aio_pika.abc import AbstractRobustConnection
from fastapi import FastAPI

from dlq_service.app import create_app
from dlq_service.config import DlqSettings
from dlq_service.failures import IncomingFailure
from dlq_service.service import DlqService
from dlq_service.state import DlqState
from libs.messaging import headers as H
from libs.messaging.topology import DEAD_LETTER_EXCHANGE, FAILED_QUEUE, FAILED_ROUTING_KEY
from libs.notification.message import Channel, NotificationMessage
from libs.notification.status import Status
from libs.storage.status_store import RedisStatusStore
from tests.support.fakes import new_notification
from tests.support.servers import app_client

ADMIN_SUB = "admin-alice"


@dataclass
class Harness:
    app: FastAPI
    client: httpx.AsyncClient
    admin_token: str
    state: DlqState

    @property
    def service(self) -> DlqService:
        return self.state.dlq

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.auth(), **kwargs.pop("headers", {})}
        return await self.client.get(path, headers=headers, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.auth(), **kwargs.pop("headers", {})}
        return await self.client.post(path, headers=headers, **kwargs)

    async def only_row(self, **params: Any) -> dict[str, Any]:
        response = await self.get("/api/v1/failed/", params={"state": "all", **params})
        rows = response.json()["data"]
        assert len(rows) == 1, rows
        return dict(rows[0])


@asynccontextmanager
async def running(settings: DlqSettings, admin_token: str) -> AsyncIterator[Harness]:
    app = create_app(settings)
    async with app_client(app) as client:
        yield Harness(app=app, client=client, admin_token=admin_token, state=client.state)


def notification(channel: Channel = Channel.EMAIL, **overrides: Any) -> NotificationMessage:
    values: dict[str, Any] = {
        "notification_id": uuid.uuid4(),
        "request_id": f"req-{uuid.uuid4().hex[:12]}",
        "notification_type": channel,
        "user_id": uuid.uuid4(),
        "template_code": "welcome",
        "variables": {"name": "Ada", "link": "https://example.test/x"},
        "language": "en",
        "priority": 3,
        "metadata": {"campaign": "autumn"},
        "created_at": datetime.now(UTC),
    }
    values.update(overrides)
    return NotificationMessage(**values)


def failure_headers(
    *,
    reason: str = "retries_exhausted",
    error: str = "SMTPResponseException: 451 try again later",
    error_class: str = "SMTPResponseException",
    service: str = "email_service",
    routing_key: str = "email",
    attempts: Any = 3,
    failed_at: datetime | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        H.FAILURE_REASON: reason,
        H.FAILURE_ERROR: error,
        H.FAILURE_ERROR_CLASS: error_class,
        H.FAILURE_SERVICE: service,
        H.FAILURE_AT: (failed_at or datetime.now(UTC)).isoformat(),
        H.ORIGINAL_ROUTING_KEY: routing_key,
        H.ATTEMPTS: attempts,
        **(extra or {}),
    }


def incoming(
    message: NotificationMessage | bytes,
    headers: dict[str, Any] | None = None,
    *,
    message_id: str | None = None,
    correlation_id: str | None = "corr-1",
    priority: int = 3,
) -> IncomingFailure:
    """A failed message as the consumer hands it to the domain."""
    body = message if isinstance(message, bytes) else message.to_bytes()
    if message_id is None:
        message_id = (
            str(message.notification_id) if isinstance(message, NotificationMessage) else "raw"
        )
    return IncomingFailure(
        body=body,
        message_id=message_id,
        correlation_id=correlation_id,
        headers=headers if headers is not None else failure_headers(),
        priority=priority,
    )


async def publish_failed(
    connection: AbstractRobustConnection,
    body: bytes,
    headers: dict[str, Any],
    *,
    message_id: str,
    correlation_id: str | None = "corr-1",
    priority: int = 3,
) -> None:
    """Publish to notifications.dlx/failed as a delivery service's dead-lettering does."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(DEAD_LETTER_EXCHANGE)
        await exchange.publish(
            aio_pika.Message(
                body,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id,
                correlation_id=correlation_id,
                headers=headers,
                priority=priority,
            ),
            routing_key=FAILED_ROUTING_KEY,
            mandatory=True,
        )
    finally:
        await channel.close()


async def queue_depth(connection: AbstractRobustConnection, queue: str = FAILED_QUEUE) -> int:
    """Ready messages in ``queue`` (unacked ones are not counted)."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        return int(count or 0)
    finally:
        await channel.close()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10.0, interval: float = 0.05
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def stored_count(harness: Harness, **params: Any) -> int:
    response = await harness.get("/api/v1/failed/", params={"state": "all", **params})
    assert response.status_code == 200, response.text
    return int(response.json()["meta"]["total"])


async def failed_status(statuses: RedisStatusStore, message: NotificationMessage) -> None:
    """A notification whose delivery failed, as the delivery service leaves it."""
    await statuses.create(new_notification(message))
    result = await statuses.transition(
        str(message.notification_id), Status.FAILED, event="failed", service="email_service"
    )
    assert result.applied
