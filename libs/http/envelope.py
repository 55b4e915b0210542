"""The response envelope every body is wrapped in: ``{success, data, error, message, meta}``."""

from __future__ import annotations

import math
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field
from starlette.responses import Response

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


class ErrorEnvelope(BaseModel):
    """Every error body (4xx, 5xx); ``data`` holds details such as ``{"errors": [...]}`` for
    ``validation_error`` or ``{"rule": ...}`` for ``weak_password``."""

    success: Literal[False]
    data: dict[str, Any] | None = None
    error: str = Field(description="A stable machine code: `validation_error`, `not_found`, ...")
    message: str = Field(description="For people.")
    meta: None = None


def ok(
    data: T, message: str | None = None, meta: PageMeta | dict[str, Any] | None = None
) -> Envelope[T]:
    """A success envelope (FastAPI checks it against the route's response model)."""
    return Envelope(success=True, data=data, message=message, meta=meta)


def envelope_response(
    envelope: Envelope[Any], status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """The envelope as a JSON response, serialized once by pydantic straight to bytes (what a
    route's ``JSONResponse(envelope.model_dump(mode="json"))`` would send, without building the
    Python dictionaries first and encoding them again with the standard library)."""
    body = envelope.__pydantic_serializer__.to_json(envelope)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def error_body(code: str, message: str, data: Any = None) -> dict[str, Any]:
    return {"success": False, "data": data, "error": code, "message": message, "meta": None}


TEXT_PATTERN = r"^[^\x00]*$"
"""Free text a route stores or searches in PostgreSQL, which cannot hold a NUL character."""

MAX_PAGE = 1_000_000
"""Pages past this are refused (422): offsets stay far inside what PostgreSQL and Redis take."""


class Pagination(BaseModel):
    """Query parameters of list endpoints."""

    page: int = Field(default=1, ge=1, le=MAX_PAGE)
    limit: int = Field(default=20, ge=1, le=100)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.limit
