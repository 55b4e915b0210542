"""What dlq_service's lifespan builds, and the dependency routes read it through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import httpx
from aio_pika.abc import AbstractRobustConnection
from fastapi import Depends
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from dlq_service.config import DlqSettings
from dlq_service.console.sessions import ConsoleSessions
from dlq_service.delivery_health import DeliveryProbe
from dlq_service.jobs import RepublishJobs
from dlq_service.notifications import NotificationHistory
from dlq_service.service import DlqService
from libs.http.auth import TokenVerifier
from libs.http.state import state_dependency
from libs.messaging.consumer import QueueConsumer
from libs.messaging.publisher import ConfirmedPublisher
from libs.messaging.queue_stats import QueueStats
from libs.notification.status import StatusStore


@dataclass(kw_only=True)
class DlqState:
    settings: DlqSettings
    engine: AsyncEngine
    redis: Redis
    http: httpx.AsyncClient
    statuses: StatusStore
    publisher: ConfirmedPublisher
    verifier: TokenVerifier
    dlq: DlqService
    consumer: QueueConsumer[bytes]
    connection: AbstractRobustConnection
    queue_stats: QueueStats
    probe: DeliveryProbe
    history: NotificationHistory
    sessions: ConsoleSessions
    jobs: RepublishJobs


dlq_state = state_dependency(DlqState)
State = Annotated[DlqState, Depends(dlq_state)]
