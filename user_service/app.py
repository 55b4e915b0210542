"""The FastAPI application: lifespan builds the database engine, Redis client, caches and key
store once; routes read them from ``app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from sqlalchemy.exc import SQLAlchemyError

from libs.clients.cache import VersionedCache
from libs.http.app import create_app as create_service_app
from libs.storage.db import create_engine, ping, session_factory
from libs.storage.redis import Keys, create_redis
from user_service.config import UserSettings
from user_service.endpoints import routers
from user_service.security import LocalVerifier, PasswordHasher, SigningKeyStore, TokenIssuer
from user_service.service import UserCacheInvalidator
from user_service.throttle import LoginThrottle

log = structlog.get_logger(__name__)

DESCRIPTION = """Users, their devices (push tokens) and channel preferences; login and token
issuing. Tokens are RS256 JWTs; the public keys are at `/.well-known/jwks.json`."""


async def _postgres_ready(request: Request) -> Mapping[str, Any] | None:
    return await ping(request.app.state.engine)


async def _redis_ready(request: Request) -> Mapping[str, Any] | None:
    await request.app.state.redis.ping()
    return None


def create_app(settings: UserSettings | None = None) -> FastAPI:
    settings = settings or UserSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
        redis = create_redis(settings.redis_url)
        try:
            sessions = session_factory(engine)
            signing_keys = SigningKeyStore(sessions, settings)
            state = app.state
            state.engine = engine
            state.sessions = sessions
            state.redis = redis
            state.signing_keys = signing_keys
            state.verifier = LocalVerifier(signing_keys, settings)
            state.issuer = TokenIssuer(signing_keys, settings)
            state.hasher = PasswordHasher(settings)
            state.throttle = LoginThrottle(redis, Keys(settings.redis_key_prefix), settings)
            state.invalidator = UserCacheInvalidator(
                VersionedCache(redis, Keys(settings.redis_key_prefix))
            )
            try:
                # On first start this creates the signing key; without a database (or before
                # migrations) the service still starts and /ready says what is missing.
                await signing_keys.active_key()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("auth.signing_key_unavailable", error=repr(exc))
            yield
        finally:
            await redis.aclose()
            await engine.dispose()

    app = create_service_app(
        service=settings.service_name,
        title="Herald user service",
        description=DESCRIPTION,
        lifespan=lifespan,
        routers=routers,
        readiness={"postgres": _postgres_ready, "redis": _redis_ready},
        max_body_bytes=settings.max_body_bytes,
    )
    app.state.settings = settings
    return app
