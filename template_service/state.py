"""What template_service's lifespan builds, and the dependency routes read it through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from libs.clients.cache import VersionedCache
from libs.http.auth import TokenVerifier
from libs.http.state import state_dependency
from template_service.active import ActiveTemplates
from template_service.config import TemplateSettings
from template_service.rendering import SandboxRenderer


@dataclass(kw_only=True)
class TemplateServiceState:
    settings: TemplateSettings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    redis: Redis
    cache: VersionedCache
    renderer: SandboxRenderer
    active: ActiveTemplates
    verifier: TokenVerifier


template_service_state = state_dependency(TemplateServiceState)
State = Annotated[TemplateServiceState, Depends(template_service_state)]
