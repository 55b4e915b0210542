"""The ASGI app: one lifespan opens the database and Redis, builds the render cache versions, the
sandboxed renderer and the JWKS verifier, and yields the typed :class:`TemplateServiceState`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from libs.clients.cache import VersionedCache
from libs.http.app import create_app as create_service_app
from libs.http.lifespan import (
    jwks_verifier,
    open_database,
    open_http_client,
    open_redis,
    postgres_ready,
    redis_ready,
)
from libs.http.state import lifespan_state
from libs.storage.redis import Keys
from template_service.active import ActiveTemplates
from template_service.config import TemplateSettings
from template_service.endpoints import renders_router, router
from template_service.rendering import RenderLimits, SandboxRenderer
from template_service.state import TemplateServiceState, template_service_state


def create_app(settings: TemplateSettings | None = None) -> FastAPI:
    settings = settings or TemplateSettings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, object]]:
        async with AsyncExitStack() as stack:
            engine, sessions = open_database(stack, settings.database_url)
            redis = open_redis(stack, settings.redis_url)
            http = open_http_client(stack, settings)
            cache = VersionedCache(redis, Keys(settings.redis_key_prefix))
            yield lifespan_state(
                TemplateServiceState(
                    settings=settings,
                    engine=engine,
                    sessions=sessions,
                    redis=redis,
                    cache=cache,
                    active=ActiveTemplates(cache),
                    renderer=SandboxRenderer(
                        RenderLimits(timeout_seconds=settings.render_timeout_seconds)
                    ),
                    verifier=jwks_verifier(settings, http),
                )
            )

    return create_service_app(
        service=settings.service_name,
        title="Herald template service",
        description=(
            "Notification templates with versions and languages, rendered in a Jinja2 sandbox."
        ),
        lifespan=lifespan,
        routers=[router, renders_router],
        readiness={
            "postgres": postgres_ready(lambda r: template_service_state.of(r).engine),
            "redis": redis_ready(lambda r: template_service_state.of(r).redis),
        },
        max_body_bytes=settings.max_body_bytes,
        metrics_token=settings.metrics_token,
    )
