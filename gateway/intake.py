"""Accepting a notification: idempotency, reference checks, status record, confirmed publish.

Idempotency holds under concurrency. The first request with a ``request_id`` sets the Redis record
``pending`` with ``SET NX`` and owns the publish; concurrent duplicates wait for it to become
``accepted`` and return the same answer; a different body with that id is a 409. If the publish is
not confirmed, the owner removes its record (the client may retry) and answers 503.

The notification id is derived from (caller, request_id, body). If a gateway dies after the broker
confirmed but before it recorded ``accepted``, the client's retry publishes a message with the same
id, and the delivery service's send claim keeps it from being sent twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis

from gateway.schemas import NotificationRequest
from libs.clients.errors import UpstreamNotFound, UpstreamUnavailable
from libs.clients.templates import TemplateCatalog
from libs.clients.users import UserDirectory
from libs.http.auth import Principal
from libs.http.errors import Conflict, ServiceUnavailable, Unprocessable
from libs.logging import get_correlation_id
from libs.messaging import headers as amqp_headers
from libs.messaging.publisher import ConfirmedPublisher, PublishFailed
from libs.messaging.topology import DIRECT_EXCHANGE, routing_key
from libs.notification.message import Channel, NotificationMessage
from libs.notification.status import NewNotification, Status
from libs.storage.redis import Keys
from libs.storage.status_store import StatusStore

log = structlog.get_logger(__name__)

NOTIFICATION_NAMESPACE = uuid.UUID("5d8c4a52-3f0e-4b5e-9a55-7c6b1f0e2a10")
POLL_SECONDS = 0.02

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Accepted:
    data: dict[str, Any]
    replayed: bool


def fingerprint(request: NotificationRequest) -> str:
    canonical = orjson.dumps(request.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class NotificationIntake:
    def __init__(
        self,
        *,
        redis: Redis,
        keys: Keys,
        status: StatusStore,
        publisher: ConfirmedPublisher,
        users: UserDirectory | None,
        templates: TemplateCatalog | None,
        idempotency_ttl: int,
        pending_ttl: int,
        confirm_timeout: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._status = status
        self._publisher = publisher
        self._users = users
        self._templates = templates
        self._ttl = idempotency_ttl
        self._pending_ttl = pending_ttl
        self._confirm_timeout = confirm_timeout
        self._release = redis.register_script(_RELEASE)

    async def submit(self, principal: Principal, request: NotificationRequest) -> Accepted:
        fp = fingerprint(request)
        key = self._keys.idempotency(principal.sub, request.request_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._pending_ttl + self._confirm_timeout
        earlier = await self._earlier_answer(key, fp, deadline)
        if earlier is not None:
            return earlier
        await self._verify_references(request)
        nid = uuid.uuid5(NOTIFICATION_NAMESPACE, f"{principal.sub}\n{request.request_id}\n{fp}")
        pending = orjson.dumps({"state": "pending", "fingerprint": fp, "notification_id": str(nid)})
        while not await self._redis.set(key, pending, nx=True, ex=self._pending_ttl):
            earlier = await self._earlier_answer(key, fp, deadline)
            if earlier is not None:
                return earlier
        try:
            data = await self._accept(principal, request, nid)
        except BaseException:
            await self._release(keys=[key], args=[pending])
            raise
        record = {"state": "accepted", "fingerprint": fp, "response": data}
        await self._redis.set(key, orjson.dumps(record), ex=self._ttl)
        return Accepted(data, replayed=False)

    async def _earlier_answer(self, key: str, fp: str, deadline: float) -> Accepted | None:
        """The answer given to an earlier request with this id (waiting while it is in flight).

        None when there is no record (any more): the caller may take the id.
        """
        loop = asyncio.get_running_loop()
        while True:
            raw = await self._redis.get(key)
            if raw is None:
                return None
            record = orjson.loads(raw)
            if record["fingerprint"] != fp:
                raise Conflict(
                    "This request_id was already used with a different body.",
                    code="idempotency_conflict",
                )
            if record["state"] == "accepted":
                return Accepted(record["response"], replayed=True)
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
    ) -> dict[str, Any]:
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
        return {
            "notification_id": str(nid),
            "request_id": request.request_id,
            "status": Status.PENDING.value,
            "created_at": created_at.isoformat(),
        }
