"""What the gateway's lifespan builds, and the dependency routes read it through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.config import GatewaySettings
from gateway.history import NotificationHistory
from gateway.intake import NotificationIntake
from libs.http.auth import TokenVerifier
from libs.http.state import state_dependency
from libs.messaging.publisher import ConfirmedPublisher
from libs.storage.ratelimit import TokenBuckets
from libs.storage.redis import Keys
from libs.storage.status_store import RedisStatusStore


@dataclass(kw_only=True)
class GatewayState:
    settings: GatewaySettings
    redis: Redis
    keys: Keys
    status: RedisStatusStore
    engine: AsyncEngine
    history: NotificationHistory
    rate_limits: TokenBuckets
    publisher: ConfirmedPublisher
    verifier: TokenVerifier
    intake: NotificationIntake


gateway_state = state_dependency(GatewayState)
State = Annotated[GatewayState, Depends(gateway_state)]
