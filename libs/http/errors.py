"""One error root for every service, and one set of handlers that renders every error the same way.

:class:`AppError` carries a status and a stable machine code. The handlers also render FastAPI's
validation errors, Starlette's 404/405/413 and unexpected exceptions in the envelope, so bad input
never becomes a 500, and a lost dependency (PostgreSQL, Redis, a peer) is a 503, not a 500.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from libs.http.envelope import error_body
from libs.logging import get_correlation_id

log = structlog.get_logger(__name__)


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


class Unprocessable(AppError):
    status_code, code = 422, "validation_error"


class RateLimited(AppError):
    status_code, code = 429, "rate_limited"


class ServiceUnavailable(AppError):
    status_code, code = 503, "service_unavailable"


def error_response(
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
    return error_response(exc.status_code, exc.code, exc.message, exc.data, exc.headers)


def validation_details(exc: RequestValidationError | ValidationError) -> dict[str, Any]:
    """``{"errors": [{field, message, type}, ...]}``: what a 422 ``validation_error`` carries."""
    return {
        "errors": [
            {"field": _field_name(e.get("loc", ())), "message": e.get("msg", ""), "type": e["type"]}
            for e in exc.errors()
        ]
    }


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if any(e.get("type") == "json_invalid" for e in exc.errors()):
        return error_response(400, "invalid_json", "The request body is not valid JSON.")
    details = validation_details(exc)
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in details["errors"][:5])
    return error_response(422, "validation_error", summary, details)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, message, headers=exc.headers)


# Losing PostgreSQL, Redis or a peer mid-request is the infrastructure's fault, not the client's
# and not a bug: answer 503 (retryable) instead of 500.
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)


async def _dependency_unavailable(_: Request, exc: Exception) -> Response:
    log.warning("http.dependency_unavailable", error=repr(exc))
    return error_response(
        503,
        "service_unavailable",
        "A dependency is unavailable; try again shortly.",
        headers={"Retry-After": "5"},
    )


async def _database_error(request: Request, exc: Exception) -> Response:
    """PostgreSQL's class 22 (data exception: a NUL character in text, a number out of range)
    is the input's fault: 422. Anything else the database refuses is a bug: 500."""
    sqlstate = str(getattr(getattr(exc, "orig", None), "sqlstate", "") or "")
    if not sqlstate.startswith("22"):
        return await _unexpected_error(request, exc)
    log.info("http.invalid_value", sqlstate=sqlstate)
    return error_response(
        422,
        "invalid_value",
        "A value cannot be stored: text must not contain NUL characters, numbers must fit.",
    )


async def _unexpected_error(_: Request, exc: Exception) -> Response:
    log.exception("http.unhandled_error", error=repr(exc))
    return error_response(
        500,
        "internal_error",
        f"Unexpected error; quote correlation id {get_correlation_id()} when reporting it.",
    )


def install_error_handlers(app: FastAPI, *, database: bool = True) -> None:
    """``database``: also SQLAlchemy's errors (a lost PostgreSQL 503, a value it cannot store
    422). A service without a database leaves them out, and so does not import SQLAlchemy (half
    a second of CPU at every start)."""
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    unavailable = DEPENDENCY_ERRORS
    if database:
        from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
        from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

        app.add_exception_handler(DBAPIError, _database_error)
        # more specific than DBAPIError: they win
        unavailable = (OperationalError, InterfaceError, SQLAlchemyTimeoutError, *unavailable)
    for error in unavailable:
        app.add_exception_handler(error, _dependency_unavailable)
    app.add_exception_handler(Exception, _unexpected_error)
