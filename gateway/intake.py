"""Accepting a notification: idempotency, reference checks, status record, confirmed publish.

Idempotency holds under concurrency. The first request with a ``request_id`` reserves the record
``pending`` (``SET NX``) and owns the publish; concurrent duplicates wait for it to become
``accepted`` and return the same answer; a different body with that id is a 409. If the publish is
not confirmed, the owner removes its record (the client may retry) and answers 503.

The notification id is derived from (caller, request_id, body). If a gateway dies after the broker
confirmed but before it recorded ``accepted``, the client's retry publishes a message with the same
id, and the delivery service's send claim keeps it from being sent twice.

Every collaborator is an interface (idempotency store, status store, publisher, user and template
lookups), so the fast tests run this class in memory and the integration tests against Redis and
RabbitMQ.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID

import orjson
import structlog
from redis.exceptions import RedisError

from gateway.idempotency import IdempotencyRecord, IdempotencyStore
from gateway.schemas import NotificationAccepted, NotificationRequest
from libs.clients.errors import UpstreamNotFound, UpstreamUnavailable
from libs.http.auth import Principal
from libs.http.errors import AppError, Conflict, ServiceUnavailable, Unprocessable
from libs.logging import get_correlation_id
from libs.messaging import headers as amqp_headers
from libs.messaging.publisher import Publisher, PublishFailed
from libs.messaging.topology import DIRECT_EXCHANGE, routing_key
from libs.notification.message import Channel, NotificationMessage
from libs.notification.status import NewNotification, Status, StatusStore

log = structlog.get_logger(__name__)

NOTIFICATION_NAMESPACE = uuid.UUID("5d8c4a52-3f0e-4b5e-9a55-7c6b1f0e2a10")
POLL_SECONDS = 0.02


class UserCheck(Protocol):
    """``libs.clients.users.UserDirectory``; raises ``UpstreamUnavailable`` when it cannot tell."""

    async def exists(self, user_id: UUID | str) -> bool: ...


class TemplateCheck(Protocol):
    """``libs.clients.templates.TemplateCatalog``; raises ``UpstreamNotFound`` for no template."""

    async def channel_of(self, code: str) -> Channel: ...


@dataclass(frozen=True)
class Accepted:
    response: NotificationAccepted
    replayed: bool
    remembered: bool = True
    """False when the broker confirmed but the idempotency record could not be saved."""


def fingerprint(request: NotificationRequest) -> str:
    canonical = orjson.dumps(request.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class NotificationIntake:
    def __init__(
        self,
        *,
        idempotency: IdempotencyStore,
        status: StatusStore,
        publisher: Publisher,
        users: UserCheck | None,
        templates: TemplateCheck | None,
        idempotency_ttl: int,
        pending_ttl: int,
        confirm_timeout: float,
    ) -> None:
        self._idempotency = idempotency
        self._status = status
        self._publisher = publisher
        self._users = users
        self._templates = templates
        self._ttl = idempotency_ttl
        self._pending_ttl = pending_ttl
        self._confirm_timeout = confirm_timeout

    async def submit(self, principal: Principal, request: NotificationRequest) -> Accepted:
        fp = fingerprint(request)
        scope, request_id = principal.sub, request.request_id
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._pending_ttl + self._confirm_timeout
        earlier = await self._earlier_answer(scope, request_id, fp, deadline)
        if earlier is not None:
            return earlier
        await self._verify_references(request)
        nid = uuid.uuid5(NOTIFICATION_NAMESPACE, f"{principal.sub}\n{request.request_id}\n{fp}")
        pending = IdempotencyRecord(state="pending", fingerprint=fp, notification_id=str(nid))
        while not await self._idempotency.reserve(scope, request_id, pending, self._pending_ttl):
            earlier = await self._earlier_answer(scope, request_id, fp, deadline)
            if earlier is not None:
                return earlier
        try:
            response = await self._accept(principal, request, nid)
        except BaseException:
            await self._idempotency.release(scope, request_id, pending)
            raise
        accepted = IdempotencyRecord(state="accepted", fingerprint=fp, response=response)
        try:
            await self._idempotency.settle(scope, request_id, accepted, self._ttl)
        except RedisError as exc:
            # The broker has the message: it *was* accepted, so say so. A retry with this
            # request_id derives the same notification id, and the send claim and the status
            # record make sure that notification is delivered once.
            log.warning("intake.not_remembered", request_id=request_id, error=repr(exc))
            return Accepted(response, replayed=False, remembered=False)
        return Accepted(response, replayed=False)

    async def submit_many(
        self, principal: Principal, requests: Sequence[NotificationRequest]
    ) -> list[Accepted | AppError]:
        """Each request as :meth:`submit` would answer it alone, in order: accepted (confirmed by
        the broker), replayed, or the error it would have raised. All run together, so their
        Redis commands share round trips (the client pipelines what one loop tick sends) and
        their publishes are confirmed together."""
        outcomes = await asyncio.gather(
            *(self.submit(principal, request) for request in requests), return_exceptions=True
        )
        answers: list[Accepted | AppError] = []
        for outcome in outcomes:
            if isinstance(outcome, Accepted | AppError):
                answers.append(outcome)
            elif isinstance(outcome, RedisError):
                answers.append(
                    ServiceUnavailable(
                        "The idempotency store is unavailable; this one was not queued.",
                        code="redis_unavailable",
                        headers={"Retry-After": "1"},
                    )
                )
            else:
                raise outcome
        return answers

    async def notification_id_for(self, principal: Principal, request_id: str) -> str | None:
        """The notification a caller's ``request_id`` was accepted as, if it was."""
        record = await self._idempotency.read(principal.sub, request_id)
        if record is None or record.response is None:
            return None
        return str(record.response.notification_id)

    async def _earlier_answer(
        self, scope: str, request_id: str, fp: str, deadline: float
    ) -> Accepted | None:
        """The answer given to an earlier request with this id (waiting while it is in flight).

        None when there is no record (any more): the caller may take the id.
        """
        loop = asyncio.get_running_loop()
        while True:
            record = await self._idempotency.read(scope, request_id)
            if record is None:
                return None
            if record.fingerprint != fp:
                raise Conflict(
                    "This request_id was already used with a different body.",
                    code="idempotency_conflict",
                )
            if record.state == "accepted" and record.response is not None:
                return Accepted(record.response, replayed=True)
            if loop.time() > deadline:
                raise Conflict(
                    "A request with this request_id is still being processed; retry shortly.",
                    code="request_in_progress",
                    headers={"Retry-After": "1"},
                )
            await asyncio.sleep(POLL_SECONDS)

    async def _verify_references(self, request: NotificationRequest) -> None:
        """Refuse unknown users and templates while their services can tell; accept otherwise.

        The two lookups are independent (each a cache read, or a call on a miss): run together.
        """
        user_known, template_kind = await asyncio.gather(
            self._user_known(request),
            self._template_kind(request),
            return_exceptions=True,
        )
        if isinstance(user_known, BaseException):
            raise user_known
        if user_known is False:
            raise Unprocessable(f"No user with id {request.user_id}.", code="unknown_user")
        if isinstance(template_kind, BaseException):
            raise template_kind
        if template_kind is not None and template_kind is not request.notification_type:
            raise Unprocessable(
                f"Template {request.template_code!r} is a {template_kind} template, not "
                f"{request.notification_type}.",
                code="template_type_mismatch",
            )

    async def _user_known(self, request: NotificationRequest) -> bool | None:
        """True/False, or None when nobody can tell (no check, or user_service unreachable)."""
        if self._users is None:
            return None
        try:
            return await self._users.exists(request.user_id)
        except UpstreamUnavailable as exc:
            log.warning("intake.user_check_skipped", error=str(exc))
            return None

    async def _template_kind(self, request: NotificationRequest) -> Channel | None:
        """The template's channel, or None when nobody can tell; 422 if there is no template."""
        if self._templates is None:
            return None
        try:
            return await self._templates.channel_of(request.template_code)
        except UpstreamNotFound as exc:
            raise Unprocessable(
                f"No template with code {request.template_code!r}.", code="unknown_template"
            ) from exc
        except UpstreamUnavailable as exc:
            log.warning("intake.template_check_skipped", error=str(exc))
            return None

    async def _accept(
        self, principal: Principal, request: NotificationRequest, nid: uuid.UUID
    ) -> NotificationAccepted:
        created_at = datetime.now(UTC)
        record = NewNotification(
            notification_id=str(nid),
            request_id=request.request_id,
            channel=request.notification_type,
            user_id=str(request.user_id),
            template_code=request.template_code,
            priority=request.priority,
            created_at=created_at,
            language=request.language,
            owner=principal.sub,
        )
        created = await self._status.create(record)
        message = NotificationMessage(
            notification_id=nid,
            request_id=request.request_id,
            notification_type=request.notification_type,
            user_id=request.user_id,
            template_code=request.template_code,
            variables=request.variables,
            language=request.language,
            priority=request.priority,
            metadata=request.metadata or {},
            created_at=created_at,
        )
        try:
            await self._publisher.publish(
                exchange=DIRECT_EXCHANGE,
                routing_key=routing_key(request.notification_type),
                body=message.to_bytes(),
                message_id=str(nid),
                correlation_id=get_correlation_id(),
                headers={amqp_headers.ATTEMPTS: 0},
                priority=request.priority,
            )
        except PublishFailed as exc:
            if created:
                await self._status.delete(record)
            raise ServiceUnavailable(
                "The message broker did not confirm the notification; nothing was queued. "
                "Retry with the same request_id.",
                code="broker_unavailable",
                headers={"Retry-After": "1"},
            ) from exc
        log.info(
            "notification.accepted",
            notification_id=str(nid),
            request_id=request.request_id,
            channel=request.notification_type.value,
        )
        return NotificationAccepted(
            notification_id=nid,
            request_id=request.request_id,
            status=Status.PENDING,
            created_at=created_at,
        )
