"""A local server speaking SendGrid's v3 Mail Send API, for tests and development.

``POST /v3/mail/send`` checks the bearer key and the body's required parts, answers 202 with an
``X-Message-Id``, and keeps the message. ``/_stub/mode`` switches to ``unavailable`` (503) or
``rate_limited`` (429 with Retry-After) or ``slow`` (the message is kept, the answer comes only
after ``answer_after`` seconds: a provider that took the mail and never said so in time).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response


class SendGridStubState:
    def __init__(self, api_key: str = "test-key") -> None:
        self.api_key = api_key
        self.messages: list[dict[str, Any]] = []
        self.mode = "ok"
        self.retry_after = 1
        self.answer_after = 30.0
        self.requests = 0
        self.lock = threading.Lock()


def _errors(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": [{"message": message}]}, status_code=status, headers=headers)


def create_sendgrid_stub(state: SendGridStubState | None = None) -> FastAPI:
    state = state or SendGridStubState()
    app = FastAPI(title="SendGrid v3 stand-in", docs_url=None, redoc_url=None)
    app.state.stub = state

    @app.post("/v3/mail/send")
    async def send(request: Request) -> Response:
        with state.lock:
            state.requests += 1
        if request.headers.get("authorization") != f"Bearer {state.api_key}":
            return _errors("The provided authorization grant is invalid.", 401)
        if state.mode == "unavailable":
            return _errors("Service unavailable", 503, {"Retry-After": str(state.retry_after)})
        if state.mode == "rate_limited":
            return _errors("Too many requests", 429, {"Retry-After": str(state.retry_after)})
        body = await request.json()
        personalizations = body.get("personalizations") or []
        if not personalizations or not personalizations[0].get("to"):
            return _errors("The personalizations field is required.", 400)
        if not body.get("from", {}).get("email") or not body.get("content"):
            return _errors("from and content are required.", 400)
        message_id = uuid.uuid4().hex
        with state.lock:
            state.messages.append({**body, "message_id": message_id})
        if state.mode == "slow":
            await asyncio.sleep(state.answer_after)
        return Response(status_code=202, headers={"X-Message-Id": message_id})

    @app.post("/_stub/mode")
    async def mode(request: Request) -> dict[str, Any]:
        body = await request.json()
        state.mode = str(body.get("mode", "ok"))
        state.retry_after = int(body.get("retry_after", 1))
        return {"mode": state.mode}

    return app
