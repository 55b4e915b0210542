"""The FastAPI application: one lifespan opens the database engine and Redis, builds the caches and
the key store, and yields the typed :class:`UserServiceState` the routes read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import structlog
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from libs.clients.cache import VersionedCache
from libs.http.app import create_app as create_service_app
from libs.http.lifespan import open_database, open_redis, postgres_ready, redis_ready
from libs.http.state import lifespan_state
from libs.storage.redis import Keys
from user_service.clients import RevocationList
from user_service.config import UserSettings
from user_service.endpoints import routers
from user_service.security import LocalVerifier, PasswordHasher, SigningKeyStore, TokenIssuer
from user_service.service import UserCacheInvalidator
from user_service.state import UserServiceState, user_service_state
from user_service.throttle import LoginThrottle, RegistrationThrottle

log = structlog.get_logger(__name__)

DESCRIPTION = """Users, their devices (push tokens) and channel preferences; login and token
issuing. Tokens are RS256 JWTs; the public keys are at `/.well-known/jwks.json`."""


def create_app(settings: UserSettings | None = None) -> FastAPI:
    settings = settings or UserSettings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, object]]:
        async with AsyncExitStack() as stack:
            engine, sessions = open_database(
                stack, settings.database_url, pool_size=settings.db_pool_size
            )
            redis = open_redis(stack, settings.redis_url)
            keys = Keys(settings.redis_key_prefix)
            signing_keys = SigningKeyStore(sessions, settings)
            state = UserServiceState(
                settings=settings,
                engine=engine,
                sessions=sessions,
                redis=redis,
                signing_keys=signing_keys,
                verifier=LocalVerifier(signing_keys, settings),
                issuer=TokenIssuer(signing_keys, settings),
                hasher=PasswordHasher(settings),
                throttle=LoginThrottle(redis, keys, settings),
                registrations=RegistrationThrottle(redis, keys, settings),
                revocations=RevocationList(redis, keys, settings),
                invalidator=UserCacheInvalidator(VersionedCache(redis, keys)),
            )
            try:
                # On first start this creates the signing key; without a database (or before
                # migrations) the service still starts and /ready says what is missing.
                await signing_keys.active_key()
            except (SQLAlchemyError, OSError) as exc:
                log.warning("auth.signing_key_unavailable", error=repr(exc))
            yield lifespan_state(state)

    return create_service_app(
        service=settings.service_name,
        title="Herald user service",
        description=DESCRIPTION,
        lifespan=lifespan,
        routers=routers,
        readiness={
            "postgres": postgres_ready(lambda r: user_service_state.of(r).engine),
            "redis": redis_ready(lambda r: user_service_state.of(r).redis),
        },
        max_body_bytes=settings.max_body_bytes,
        metrics_token=settings.metrics_token,
    )
