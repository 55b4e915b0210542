"""ASGI middleware every service runs: correlation id, HTTP metrics, request body limit, paths.

Pure ASGI (no BaseHTTPMiddleware): they wrap ``send``/``receive`` and add no task per request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.http.errors import error_response
from libs.logging import bind_correlation_id
from libs.metrics import HTTP_LATENCY, HTTP_REQUESTS


class CorrelationIdMiddleware:
    """Pure ASGI middleware: binds the request's correlation id and echoes it in the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope.get("headers", []):
            if name == b"x-correlation-id":
                incoming = value.decode("latin-1")
                break
        structlog.contextvars.clear_contextvars()
        cid = bind_correlation_id(incoming)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-correlation-id", cid.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_header)


class HttpMetricsMiddleware:
    """Counts requests and times them by route template (not raw path, to bound cardinality)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            HTTP_LATENCY.labels(method, template).observe(time.perf_counter() - started)


class BodyLimitMiddleware:
    """413 in the envelope for bodies over the limit: by Content-Length up front, else as read.
    ``per_path``: other limits for some paths (a batch endpoint)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        message = f"The request body exceeds {limit} bytes."
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                response = error_response(413, "payload_too_large", message)
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    # Starlette's HTTPException, not an AppError: FastAPI turns any other error
                    # met while reading a body into 400 "There was an error parsing the body",
                    # and lets this one through to the handlers (413 in the envelope).
                    raise HTTPException(413, message)
            return event

        await self.app(scope, limited_receive, send)


class PathGuardMiddleware:
    """400 for a path with control characters (``%0A``, ``%00``, ...): no route has one, and
    Starlette's route patterns end in ``$``, which also matches before a trailing newline, so
    ``/api/v1/failed/%0A`` would otherwise be answered by the route for ``/api/v1/failed/``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(ord(c) < 0x20 or ord(c) == 0x7F for c in scope["path"]):
            response = error_response(400, "invalid_path", "The path contains control characters.")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
