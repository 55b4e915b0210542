"""The ASGI middleware every service runs: correlation id, HTTP metrics, paths, body limit.

Pure ASGI (no BaseHTTPMiddleware): it wraps ``send``/``receive`` and adds no task per request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.http.errors import error_response
from libs.logging import bind_correlation_id
from libs.metrics import HTTP_LATENCY, HTTP_REQUESTS


class EdgeMiddleware:
    """Every request's first steps, in one ASGI layer (one frame and one ``send`` wrapper a
    request, where four middlewares took four and two: a few per cent of a gateway request's CPU),
    in this order:

    1. **Correlation id**: the request's ``X-Correlation-ID`` (or a new one) is bound for the
       log lines and echoed in the response.
    2. **Metrics**: requests counted and timed by route template (not the raw path, to bound the
       labels' cardinality) and status.
    3. **Path guard**: 400 for a path with control characters (``%0A``, ``%00``, ...): no route
       has one, and Starlette's route patterns end in ``$``, which also matches before a trailing
       newline, so ``/api/v1/failed/%0A`` would otherwise be answered by ``/api/v1/failed/``.
    4. **Body limit**: 413 in the envelope for a body over the limit, by Content-Length up front,
       else as it is read. ``per_path``: other limits for some paths (a batch endpoint).

    The answers of steps 3 and 4 carry the correlation id and are counted like any other.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})
        # the metrics' children by label values (``labels()`` looks them up under a lock)
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = None
        content_length = None
        for name, value in scope.get("headers", []):
            if name == b"x-correlation-id" and incoming is None:
                incoming = value.decode("latin-1")
            elif name == b"content-length" and content_length is None:
                content_length = value
        structlog.contextvars.clear_contextvars()
        cid = bind_correlation_id(incoming).encode("latin-1")
        status = 500

        async def respond(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-correlation-id", cid)]
            await send(message)

        try:
            path = scope["path"]
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
                refusal = error_response(
                    400, "invalid_path", "The path contains control characters."
                )
                await refusal(scope, receive, respond)
                return
            limit = self.per_path.get(path, self.max_bytes)
            declared = content_length or b""
            if declared.isdigit() and int(declared) > limit:
                too_large = error_response(413, "payload_too_large", _too_large(limit))
                await too_large(scope, receive, respond)
                return
            await self.app(scope, _limited(receive, limit), respond)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope.get("method", "GET")
        counter = self._requests.get((method, template, status))
        if counter is None:
            counter = HTTP_REQUESTS.labels(method, template, str(status))
            self._requests[(method, template, status)] = counter
        counter.inc()
        timer = self._latency.get((method, template))
        if timer is None:
            timer = self._latency[(method, template)] = HTTP_LATENCY.labels(method, template)
        timer.observe(seconds)


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that refuses a body growing past ``limit`` (one sent without, or with a wrong,
    Content-Length)."""
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        event = await receive()
        if event["type"] == "http.request":
            received += len(event.get("body", b""))
            if received > limit:
                # Starlette's HTTPException, not an AppError: FastAPI turns any other error met
                # while reading a body into 400 "There was an error parsing the body", and lets
                # this one through to the handlers (413 in the envelope).
                raise HTTPException(413, _too_large(limit))
        return event

    return limited_receive


def _too_large(limit: int) -> str:
    return f"The request body exceeds {limit} bytes."
