"""What user_service's lifespan builds, and the dependency routes read it through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from libs.http.state import state_dependency
from user_service.clients import RevocationList
from user_service.config import UserSettings
from user_service.security import LocalVerifier, PasswordHasher, SigningKeyStore, TokenIssuer
from user_service.service import UserCacheInvalidator
from user_service.throttle import LoginThrottle, RegistrationThrottle


@dataclass(kw_only=True)
class UserServiceState:
    settings: UserSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    signing_keys: SigningKeyStore
    verifier: LocalVerifier
    issuer: TokenIssuer
    hasher: PasswordHasher
    throttle: LoginThrottle
    registrations: RegistrationThrottle
    revocations: RevocationList
    invalidator: UserCacheInvalidator


user_service_state = state_dependency(UserServiceState)
State = Annotated[UserServiceState, Depends(user_service_state)]
