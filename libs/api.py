"""The HTTP conventions every service shares.

- every body is the envelope ``{success, data, error, message, meta}``;
- one error base class (:class:`AppError`) with a status and a stable machine code, and one set of
  handlers that renders every error (ours, FastAPI's validation errors, Starlette's 404/405/413 and
  unexpected exceptions) the same way, so bad input never becomes a 500;
- ``/health`` (liveness), ``/ready`` (the service's own dependencies) and ``/metrics``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.logging import CorrelationIdMiddleware, get_correlation_id
from libs.metrics import HttpMetricsMiddleware

log = structlog.get_logger(__name__)

T = TypeVar("T")


class PageMeta(BaseModel):
    total: int
    limit: int
    page: int
    total_pages: int
    has_next: bool
    has_previous: bool

    @classmethod
    def build(cls, total: int, limit: int, page: int) -> PageMeta:
        pages = math.ceil(total / limit) if limit else 0
        return cls(
            total=total,
            limit=limit,
            page=page,
            total_pages=pages,
            has_next=page < pages,
            has_previous=page > 1,
        )


class Envelope(BaseModel, Generic[T]):
    """Every response body."""

    success: bool
    data: T | None = None
    error: str | None = None
    message: str | None = None
    meta: PageMeta | dict[str, Any] | None = None


def ok(data: Any = None, message: str | None = None, meta: Any = None) -> dict[str, Any]:
    """A success envelope as a plain dict (FastAPI validates it against the response model)."""
    return {"success": True, "data": data, "error": None, "message": message, "meta": meta}


class Pagination(BaseModel):
    """Query parameters of list endpoints."""

    page: int = Field(default=1, ge=1)
    limit: int = Field(default=20, ge=1, le=100)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit


# ---------------------------------------------------------------------------------------------
# Errors


class AppError(Exception):
    """Base of every error a service raises on purpose; rendered as an error envelope."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.data = data
        self.headers = dict(headers or {})


class BadRequest(AppError):
    status_code, code = 400, "bad_request"


class Unauthorized(AppError):
    status_code, code = 401, "unauthorized"


class Forbidden(AppError):
    status_code, code = 403, "forbidden"


class NotFound(AppError):
    status_code, code = 404, "not_found"


class Conflict(AppError):
    status_code, code = 409, "conflict"


class PayloadTooLarge(AppError):
    status_code, code = 413, "payload_too_large"


class Unprocessable(AppError):
    status_code, code = 422, "validation_error"


class RateLimited(AppError):
    status_code, code = 429, "rate_limited"


class ServiceUnavailable(AppError):
    status_code, code = 503, "service_unavailable"


def error_body(code: str, message: str, data: Any = None) -> dict[str, Any]:
    return {"success": False, "data": data, "error": code, "message": message, "meta": None}


def _error_response(
    status: int, code: str, message: str, data: Any = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, data), status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "service_unavailable",
}


def _field_name(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[0] if loc else "body")


async def _app_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return _error_response(exc.status_code, exc.code, exc.message, exc.data, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return _error_response(400, "invalid_json", "The request body is not valid JSON.")
    fields = [
        {"field": _field_name(e.get("loc", ())), "message": e.get("msg", ""), "type": e["type"]}
        for e in errors
    ]
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
    return _error_response(422, "validation_error", summary, {"errors": fields})


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return _error_response(exc.status_code, code, message, headers=exc.headers)


# Losing PostgreSQL, Redis or a peer mid-request is the infrastructure's fault, not the client's
# and not a bug: answer 503 (retryable) instead of 500.
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    SQLAlchemyTimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)


async def _dependency_unavailable(_: Request, exc: Exception) -> Response:
    log.warning("http.dependency_unavailable", error=repr(exc))
    return _error_response(
        503,
        "service_unavailable",
        "A dependency is unavailable; try again shortly.",
        headers={"Retry-After": "5"},
    )


async def _unexpected_error(_: Request, exc: Exception) -> Response:
    log.exception("http.unhandled_error", error=repr(exc))
    return _error_response(
        500,
        "internal_error",
        f"Unexpected error; quote correlation id {get_correlation_id()} when reporting it.",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error in DEPENDENCY_ERRORS:
        app.add_exception_handler(error, _dependency_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)


class BodyLimitMiddleware:
    """413 in the envelope for bodies over the limit: by Content-Length up front, else as read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"The request body exceeds {self.max_bytes} bytes."
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                response = _error_response(413, "payload_too_large", message)
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(message)
            return event

        await self.app(scope, limited_receive, send)


# ---------------------------------------------------------------------------------------------
# Operational routes

ReadinessCheck = Callable[[Request], Awaitable[Mapping[str, Any] | None]]
"""Returns details to show (or None); raises to report the dependency as down."""


def operational_router(service: str, checks: Mapping[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/health", summary="Liveness: the process answers; checks no dependency")
    async def health() -> dict[str, Any]:
        return ok({"status": "ok", "service": service, "timestamp": datetime.now(UTC)})

    @router.get("/ready", summary="Readiness: the service's own dependencies answer")
    async def ready(request: Request) -> Response:
        details: dict[str, Any] = {}
        healthy = True
        for name, check in checks.items():
            try:
                info = await check(request)
                details[name] = {"status": "ok", **(info or {})}
            except Exception as exc:  # a readiness probe reports every failure, whatever it is
                healthy = False
                details[name] = {"status": "down", "error": f"{type(exc).__name__}: {exc}"}
        data = {"status": "ok" if healthy else "unavailable", "service": service, "checks": details}
        if healthy:
            return JSONResponse(ok(data))
        return _error_response(503, "not_ready", "A dependency is unavailable.", data)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def create_app(
    *,
    service: str,
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None,
    routers: Sequence[APIRouter] = (),
    readiness: Mapping[str, ReadinessCheck] | None = None,
    max_body_bytes: int = 65_536,
    description: str = "",
) -> FastAPI:
    """Build a FastAPI app with the envelope, error handlers, middleware and operational routes."""
    app = FastAPI(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(CorrelationIdMiddleware)
    app.include_router(operational_router(service, readiness or {}))
    for router in routers:
        app.include_router(router)
    return app
