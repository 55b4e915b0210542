"""The app factory every service uses, with the operational routes.

``create_app`` installs the envelope's error handlers and the shared middleware, and adds
``/health`` (liveness), ``/ready`` (the service's own dependencies) and ``/metrics``. Gauges read
from shared state (breakers in Redis, queue depths in RabbitMQ) are refreshed by the service's
``metrics_refresh`` hooks when Prometheus scrapes, so they say what holds now, not what this
replica last saw.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Literal

import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from pydantic import BaseModel
from starlette.routing import BaseRoute

from libs.http.docs import install_offline_docs
from libs.http.envelope import Envelope, ErrorEnvelope, envelope_response, ok
from libs.http.errors import Unauthorized, error_response, install_error_handlers
from libs.http.middleware import EdgeMiddleware

log = structlog.get_logger(__name__)


class Health(BaseModel):
    status: Literal["ok"]
    service: str
    timestamp: datetime


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    service: str
    checks: dict[str, dict[str, Any]]
    """Per dependency: ``status`` (ok/down), ``error`` when down, and what the check reports."""


_SCHEMAS = "#/components/schemas/"

ReadinessCheck = Callable[[Request], Awaitable[Mapping[str, Any] | None]]
"""Returns details to show (or None); raises to report the dependency as down."""

MetricsRefresh = Callable[[Request], Awaitable[None]]
"""Updates gauges from shared state right before a scrape; a failure leaves them as they were."""
REFRESH_TIMEOUT_SECONDS = 2.0


def operational_router(
    service: str,
    checks: Mapping[str, ReadinessCheck],
    metrics_refresh: Mapping[str, MetricsRefresh] | None = None,
    metrics_token: str | None = None,
) -> APIRouter:
    """``metrics_token``: when set, ``/metrics`` answers only ``Authorization: Bearer <it>``."""
    router = APIRouter(tags=["operations"])

    @router.get("/health", summary="Liveness: the process answers; checks no dependency")
    async def health() -> Envelope[Health]:
        return ok(Health(status="ok", service=service, timestamp=datetime.now(UTC)))

    @router.get(
        "/ready",
        summary="Readiness: the service's own dependencies answer",
        responses={503: {"description": "A dependency is unavailable (`not_ready`)"}},
    )
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
        data = Readiness(
            status="ok" if healthy else "unavailable", service=service, checks=details
        ).model_dump(mode="json")
        if healthy:
            return envelope_response(ok(data))
        return error_response(503, "not_ready", "A dependency is unavailable.", data)

    @router.get(
        "/metrics",
        summary="Prometheus metrics (with METRICS_TOKEN set: `Authorization: Bearer <token>`)",
        response_class=Response,
        responses={401: {"description": "Missing or wrong token"}},
    )
    async def metrics(request: Request) -> Response:
        if metrics_token is not None:
            _check_metrics_token(request.headers.get("authorization"), metrics_token)
        for name, refresh in (metrics_refresh or {}).items():
            try:
                await asyncio.wait_for(refresh(request), REFRESH_TIMEOUT_SECONDS)
            except Exception as exc:  # a scrape never fails for one stale gauge
                log.warning("metrics.refresh_failed", gauges=name, error=repr(exc))
        return Response(_exposition(), media_type=CONTENT_TYPE_LATEST)

    return router


def _exposition() -> bytes:
    """This process's metrics, or every worker's summed (``prometheus_client`` multiprocess mode,
    which ``libs.http.serve`` turns on when a service runs several workers)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


def _check_metrics_token(authorization: str | None, expected: str) -> None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized(
            "/metrics needs the metrics token as a bearer token.",
            code="missing_token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("Wrong metrics token.", code="invalid_token")


def document_error_envelope(app: FastAPI) -> None:
    """Make the OpenAPI say what errors look like: every 4xx and 5xx response of every operation
    is the :class:`ErrorEnvelope` (FastAPI would document its own ``{"detail": ...}`` for 422,
    which no route here answers)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        error = {"application/json": {"schema": {"$ref": f"{_SCHEMAS}ErrorEnvelope"}}}
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                for status, response in operation.get("responses", {}).items():
                    if status[:1] in ("4", "5"):
                        response["content"] = error
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["ErrorEnvelope"] = ErrorEnvelope.model_json_schema(
            ref_template=f"{_SCHEMAS}{{model}}"
        )
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    *,
    service: str,
    title: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None,
    routers: Sequence[APIRouter] = (),
    readiness: Mapping[str, ReadinessCheck] | None = None,
    metrics_refresh: Mapping[str, MetricsRefresh] | None = None,
    max_body_bytes: int = 65_536,
    body_limits: Mapping[str, int] | None = None,
    description: str = "",
    metrics_token: str | None = None,
    hot_routes: Sequence[BaseRoute] = (),
    database: bool = True,
) -> FastAPI:
    """Build a FastAPI app with the envelope, error handlers, middleware and operational routes.

    ``body_limits``: a larger (or smaller) body limit than ``max_body_bytes`` for some paths.
    ``hot_routes``: plain Starlette routes matched before every other (libs/http/hot.py).
    ``database``: False for a service without one (its errors' handlers left out)."""
    app = FastAPI(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=lifespan,
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,
        redoc_url=None,
    )
    document_error_envelope(app)
    install_offline_docs(app)
    install_error_handlers(app, database=database)
    app.add_middleware(EdgeMiddleware, max_bytes=max_body_bytes, per_path=body_limits)
    app.include_router(operational_router(service, readiness or {}, metrics_refresh, metrics_token))
    for router in routers:
        app.include_router(router)
    app.router.routes[:0] = hot_routes
    return app
