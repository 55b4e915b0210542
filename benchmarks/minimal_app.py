"""The intake ceiling: a minimal FastAPI endpoint doing one Redis SET NX and one confirmed publish.

What a gateway request cannot do without (remember the request id, hand a persistent message to the
broker and wait for its confirm), with nothing else: no auth, no validation beyond JSON, no status
record. Served by uvicorn with uvloop and httptools, like the services, with 1 or 2 workers, and
driven by the same wrk script as the gateway, so the gateway's figure is a ratio to it.

``python -m uvicorn benchmarks.minimal_app:create_app --factory --workers N ...`` with
``MINIMAL_RABBITMQ_URL``, ``MINIMAL_REDIS_URL`` and ``MINIMAL_REDIS_PREFIX`` in the environment.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import orjson
from fastapi import FastAPI, Request, Response
from redis.asyncio import Redis

QUEUE = "bench.minimal"


def create_app() -> FastAPI:
    amqp_url = os.environ["MINIMAL_RABBITMQ_URL"]
    redis_url = os.environ["MINIMAL_REDIS_URL"]
    prefix = os.environ.get("MINIMAL_REDIS_PREFIX", "bench:minimal:")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_url(redis_url)
        connection = await aio_pika.connect_robust(amqp_url)
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(QUEUE, durable=True)
        app.state.redis, app.state.exchange = redis, channel.default_exchange
        try:
            yield
        finally:
            await connection.close()
            await redis.aclose()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/notifications/", status_code=202)
    async def accept(body: dict[str, Any], request: Request, response: Response) -> dict[str, Any]:
        request_id = str(body.get("request_id", ""))
        nid = str(uuid.uuid4())
        state = request.app.state
        if await state.redis.set(f"{prefix}{request_id}", nid, nx=True, ex=3600):
            message = aio_pika.Message(
                orjson.dumps(body),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=nid,
            )
            await state.exchange.publish(message, routing_key=QUEUE)
        else:
            response.headers["Idempotent-Replayed"] = "true"
        data = {"notification_id": nid, "request_id": request_id, "status": "pending"}
        return {"success": True, "data": data}

    return app
