"""The ASGI app: lifespan (database, Redis, render cache versions, JWKS verifier) and routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request

from libs.clients.cache import VersionedCache
from libs.http.app import create_app as create_service_app
from libs.http.auth import JWKS_PATH, JwksVerifier
from libs.storage.db import create_engine, ping, session_factory
from libs.storage.redis import Keys, create_redis
from template_service.config import TemplateSettings
from template_service.endpoints import router
from template_service.rendering import RenderLimits, SandboxRenderer


async def _postgres_ready(request: Request) -> Mapping[str, Any] | None:
    return await ping(request.app.state.engine)


async def _redis_ready(request: Request) -> Mapping[str, Any] | None:
    await request.app.state.redis.ping()
    return None


def create_app(settings: TemplateSettings | None = None) -> FastAPI:
    settings = settings or TemplateSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        redis = create_redis(settings.redis_url)
        http = httpx.AsyncClient(timeout=settings.http_timeout_seconds)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = session_factory(engine)
        app.state.redis = redis
        app.state.cache = VersionedCache(redis, Keys(settings.redis_key_prefix))
        app.state.renderer = SandboxRenderer(
            RenderLimits(timeout_seconds=settings.render_timeout_seconds)
        )
        app.state.verifier = JwksVerifier(
            f"{settings.user_service_url.rstrip('/')}{JWKS_PATH}",
            http,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            cache_seconds=settings.jwks_cache_seconds,
        )
        try:
            yield
        finally:
            await http.aclose()
            await redis.aclose()
            await engine.dispose()

    return create_service_app(
        service=settings.service_name,
        title="Herald template service",
        description=(
            "Notification templates with versions and languages, rendered in a Jinja2 sandbox."
        ),
        lifespan=lifespan,
        routers=[router],
        readiness={"postgres": _postgres_ready, "redis": _redis_ready},
        max_body_bytes=settings.max_body_bytes,
    )
