"""In-memory stand-ins for our own interfaces, for the fast tier (``pytest -m unit``).

Each one keeps the contract of the real implementation it stands for (the Redis status store, the
send claims, the channel adapter, the user and template clients, the idempotency store, the
confirmed publisher), and every behaviour a unit test checks with them is also tested against the
real services in the integration, end-to-end and chaos suites. They never stand in for RabbitMQ,
Redis or PostgreSQL themselves.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from gateway.idempotency import IdempotencyRecord
from libs.clients.errors import UpstreamNotFound
from libs.clients.models import Device, Preferences, Rendered, UserProfile
from libs.delivery.claims import Claim, ClaimState
from libs.delivery.pipeline import Recipient
from libs.delivery.providers import Commit, ProviderError, SendResult
from libs.messaging.outcomes import Delivery
from libs.messaging.publisher import OutgoingMessage, PublishFailed
from libs.notification.message import Channel, NotificationMessage
from libs.notification.status import (
    ALLOWED_FROM,
    FINISHED_STATUSES,
    NewNotification,
    Status,
    StatusRecord,
    TimelineEvent,
    TransitionResult,
)


def now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------
# Status store (libs.storage.status_store.RedisStatusStore)


class InMemoryStatusStore:
    """The status machine with the same edges and fields as the Redis store."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.timelines: dict[str, list[TimelineEvent]] = {}
        self.failure: Exception | None = None
        """Raised by every write while set (a Redis outage)."""

    async def create(self, n: NewNotification) -> bool:
        if self.failure is not None:
            raise self.failure
        if n.notification_id in self.records:
            return False
        self.records[n.notification_id] = {
            "notification_id": n.notification_id,
            "request_id": n.request_id,
            "notification_type": n.channel,
            "user_id": n.user_id,
            "template_code": n.template_code,
            "priority": n.priority,
            "language": n.language,
            "status": Status.PENDING,
            "attempts": 0,
            "owner": n.owner or None,
            "created_at": n.created_at,
            "updated_at": n.created_at,
        }
        self.timelines[n.notification_id] = [
            TimelineEvent(at=now(), event="accepted", status=Status.PENDING, service="gateway")
        ]
        return True

    async def create_many(self, notifications: Sequence[NewNotification]) -> list[bool]:
        if self.failure is not None:
            raise self.failure
        return [await self.create(n) for n in notifications]

    async def delete_many(self, notifications: Sequence[NewNotification]) -> None:
        for n in notifications:
            self.records.pop(n.notification_id, None)
            self.timelines.pop(n.notification_id, None)

    async def transition(
        self,
        notification_id: str,
        to: Status | None,
        *,
        event: str,
        service: str,
        allowed_from: Iterable[Status] | None = None,
        attempt: int | None = None,
        provider: str | None = None,
        error: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> TransitionResult:
        if self.failure is not None:
            raise self.failure
        record = self.records.get(notification_id)
        if record is None:
            return TransitionResult(applied=False, previous=None)
        current: Status = record["status"]
        if to is not None:
            allowed = set(allowed_from if allowed_from is not None else ALLOWED_FROM[to])
            if current not in allowed:
                return TransitionResult(applied=False, previous=current)
            record["status"] = to
            if to in FINISHED_STATUSES:
                record["finished_at"] = now()
        if provider is not None:
            record["provider"] = provider
        if error is not None:
            record["last_error"] = error[:1000]
        if attempt and attempt > record["attempts"]:
            record["attempts"] = attempt
        record["updated_at"] = now()
        extra = {k: v for k, v in (details or {}).items() if v is not None}
        self.timelines[notification_id].append(
            TimelineEvent(
                at=now(),
                event=event,
                status=to,
                service=service,
                provider=provider,
                error=error,
                **extra,
            )
        )
        return TransitionResult(applied=True, previous=current)

    async def get(self, notification_id: str) -> StatusRecord | None:
        record = self.records.get(notification_id)
        if record is None:
            return None
        return StatusRecord(**record, timeline=list(self.timelines[notification_id]))

    def events(self, notification_id: str) -> list[str]:
        return [e.event for e in self.timelines.get(notification_id, [])]

    def status_of(self, notification_id: str) -> Status:
        status: Status = self.records[notification_id]["status"]
        return status


# ---------------------------------------------------------------------------------------------
# Send claims (libs.delivery.claims.SendClaims)


class RecordingCommit:
    """A commit mark that only records that the provider reached its point of no return."""

    def __init__(self) -> None:
        self.written: list[str] = []

    async def prepare(self) -> None:
        return None

    async def write(self, provider: str) -> None:
        self.written.append(provider)

    async def settle(self) -> None:
        return None


class InMemoryClaims:
    """One claim per (channel, notification, recipient): sending (held), sent, or free.

    ``held_by_other`` makes a recipient's claim busy, as when another live consumer holds it.
    """

    def __init__(self) -> None:
        self.state: dict[str, str] = {}
        self.held_by_other: set[str] = set()
        self.commits: list[RecordingCommit] = []

    @staticmethod
    def key(channel: str, notification_id: str, recipient: str) -> str:
        return f"{channel}:{notification_id}:{recipient}"

    async def acquire(self, channel: str, notification_id: str, recipient: str) -> Claim:
        key = self.key(channel, notification_id, recipient)
        current = self.state.get(key)
        if current is not None and current.startswith("sent:"):
            _, provider, *rest = current.split(":")
            return Claim(key, "", ClaimState.SENT, provider=provider, unknown=rest == ["unknown"])
        if key in self.held_by_other or current == "sending":
            return Claim(key, "", ClaimState.BUSY)
        self.state[key] = "sending"
        return Claim(key, uuid.uuid4().hex, ClaimState.ACQUIRED)

    def commit_mark(self, claim: Claim) -> Commit:
        commit = RecordingCommit()
        self.commits.append(commit)
        return commit

    async def mark_sent(self, claim: Claim, provider: str) -> None:
        self.state[claim.key] = f"sent:{provider}"

    async def mark_unknown(self, claim: Claim, provider: str) -> None:
        self.state[claim.key] = f"sent:{provider}:unknown"

    async def release(self, claim: Claim) -> None:
        if self.state.get(claim.key) == "sending":
            del self.state[claim.key]

    def sent(self) -> dict[str, str]:
        return {k: v for k, v in self.state.items() if v.startswith("sent:")}


# ---------------------------------------------------------------------------------------------
# Channel adapter (email_service.adapter.EmailAdapter / push_service.adapter.PushAdapter)


@dataclass
class ScriptedAdapter:
    """Sends succeed unless a recipient's next outcome is scripted as an error."""

    channel: Channel = Channel.EMAIL
    provider: str = "smtp"
    script: dict[str, list[ProviderError]] = field(default_factory=dict)
    sent: list[tuple[str, str]] = field(default_factory=list)
    pruned: list[tuple[str, str]] = field(default_factory=list)

    def opted_in(self, preferences: Preferences) -> bool:
        return preferences.email if self.channel is Channel.EMAIL else preferences.push

    def recipients(self, user: UserProfile) -> Sequence[Recipient]:
        if self.channel is Channel.EMAIL:
            return [Recipient("email", user.email)] if user.email else []
        return [Recipient(d.id, d.token) for d in user.push_tokens]

    async def send(
        self,
        message: NotificationMessage,
        user: UserProfile,
        rendered: Rendered,
        recipient: Recipient,
        commit: Commit | None = None,
    ) -> SendResult:
        queued = self.script.get(recipient.key)
        if queued:
            raise queued.pop(0)
        if commit is not None:
            await commit.write(self.provider)
        self.sent.append((str(message.notification_id), recipient.address))
        return SendResult(self.provider)

    async def recipient_gone(self, user: UserProfile, recipient: Recipient, reason: str) -> None:
        self.pruned.append((recipient.address, reason))


# ---------------------------------------------------------------------------------------------
# Our own services' clients (libs.clients.users / libs.clients.templates)


class InMemoryUsers:
    """UserDirectory: preferences and profiles; unknown ids raise UpstreamNotFound, and
    ``failure`` (an UpstreamError) is raised for every call while set."""

    def __init__(self) -> None:
        self.users: dict[str, UserProfile] = {}
        self.failure: Exception | None = None

    def add(
        self,
        *,
        email: str | None = "ada@example.com",
        devices: Sequence[str] = (),
        preferences: Preferences | None = None,
        language: str | None = None,
    ) -> UserProfile:
        user = UserProfile(
            id=uuid.uuid4(),
            name="Ada Lovelace",
            email=email or "",
            language=language,
            preferences=preferences or Preferences(),
            push_tokens=[Device(id=f"dev-{i}", token=t) for i, t in enumerate(devices)],
        )
        self.users[str(user.id)] = user
        return user

    def _find(self, user_id: UUID | str) -> UserProfile:
        if self.failure is not None:
            raise self.failure
        user = self.users.get(str(user_id))
        if user is None:
            raise UpstreamNotFound("user_service", f"no user {user_id}", 404)
        return user

    async def get_preferences(self, user_id: UUID | str) -> Preferences:
        return self._find(user_id).preferences

    async def get_user(self, user_id: UUID | str) -> UserProfile:
        return self._find(user_id)

    async def exists(self, user_id: UUID | str) -> bool:
        try:
            self._find(user_id)
        except UpstreamNotFound:
            return False
        return True


class InMemoryTemplates:
    """RenderClient and TemplateCatalog: templates by code, rendered by formatting variables."""

    def __init__(self) -> None:
        self.types: dict[str, Channel] = {"welcome": Channel.EMAIL, "welcome_push": Channel.PUSH}
        self.failure: Exception | None = None
        self.renders: list[tuple[str, str | None]] = []

    async def render(self, code: str, language: str | None, variables: dict[str, Any]) -> Rendered:
        kind = await self.channel_of(code)
        self.renders.append((code, language))
        name = variables.get("name", "there")
        if kind is Channel.EMAIL:
            return Rendered(
                code=code,
                version=1,
                language=language or "en",
                type=kind,
                subject=f"Welcome, {name}!",
                html=f"<p>Hello {name}</p>",
                text=f"Hello {name}",
            )
        return Rendered(
            code=code, version=1, language=language or "en", type=kind, title="Hi", body=name
        )

    async def channel_of(self, code: str) -> Channel:
        if self.failure is not None:
            raise self.failure
        kind = self.types.get(code)
        if kind is None:
            raise UpstreamNotFound("template_service", f"no template {code!r}", 404)
        return kind


# ---------------------------------------------------------------------------------------------
# Gateway: idempotency store and confirmed publisher


class InMemoryIdempotencyStore:
    """Claims with SET NX semantics, key by key; release only if unchanged."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], IdempotencyRecord] = {}
        self.settle_failure: Exception | None = None

    async def read(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        return self.records.get((scope, request_id))

    async def claim(
        self, scope: str, claims: Sequence[tuple[str, IdempotencyRecord]], ttl: int
    ) -> list[IdempotencyRecord | None]:
        found: list[IdempotencyRecord | None] = []
        for request_id, record in claims:
            existing = self.records.get((scope, request_id))
            if existing is None:
                self.records[(scope, request_id)] = record
            found.append(existing)
        return found

    async def release(self, scope: str, claims: Sequence[tuple[str, IdempotencyRecord]]) -> None:
        for request_id, record in claims:
            if self.records.get((scope, request_id)) == record:
                del self.records[(scope, request_id)]

    async def settle(
        self, scope: str, records: Sequence[tuple[str, IdempotencyRecord]], ttl: int
    ) -> None:
        if self.settle_failure is not None:
            raise self.settle_failure
        for request_id, record in records:
            self.records[(scope, request_id)] = record


@dataclass
class Published:
    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    correlation_id: str | None
    headers: dict[str, Any]
    priority: int


class RecordingPublisher:
    """Confirms every publish (after ``delay`` seconds) unless ``fail`` is set."""

    def __init__(self, delay: float = 0.0) -> None:
        self.published: list[Published] = []
        self.fail = False
        self.delay = delay

    async def publish_many(self, messages: Sequence[OutgoingMessage]) -> list[PublishFailed | None]:
        outcomes: list[PublishFailed | None] = []
        for m in messages:
            try:
                await self.publish(
                    exchange=m.exchange,
                    routing_key=m.routing_key,
                    body=m.body,
                    message_id=m.message_id,
                    correlation_id=m.correlation_id,
                    headers=m.headers,
                    priority=m.priority,
                    expiration_ms=m.expiration_ms,
                )
                outcomes.append(None)
            except PublishFailed as exc:
                outcomes.append(exc)
        return outcomes

    async def publish(
        self,
        *,
        exchange: str,
        routing_key: str,
        body: bytes,
        message_id: str,
        correlation_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        priority: int = 0,
        expiration_ms: int | None = None,
    ) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise PublishFailed("the broker did not confirm (test)")
        self.published.append(
            Published(
                exchange,
                routing_key,
                body,
                message_id,
                correlation_id,
                dict(headers or {}),
                priority,
            )
        )


# ---------------------------------------------------------------------------------------------
# Messages


def message_for(
    user: UserProfile,
    channel: Channel = Channel.EMAIL,
    template_code: str | None = None,
    **overrides: Any,
) -> NotificationMessage:
    values: dict[str, Any] = {
        "notification_id": uuid.uuid4(),
        "request_id": f"req-{uuid.uuid4().hex[:8]}",
        "notification_type": channel,
        "user_id": user.id,
        "template_code": template_code
        or ("welcome" if channel is Channel.EMAIL else "welcome_push"),
        "variables": {"name": "Ada"},
        "created_at": now(),
    }
    return NotificationMessage(**(values | overrides))


def delivery_of(
    message: NotificationMessage, *, attempts: int = 0, waits: int = 0
) -> Delivery[NotificationMessage]:
    headers: dict[str, Any] = {"x-attempts": attempts}
    if waits:
        headers["x-waits"] = waits
    return Delivery(
        message=message,
        message_id=str(message.notification_id),
        correlation_id="corr",
        headers=headers,
        routing_key=message.notification_type.value,
        redelivered=False,
        priority=message.priority,
    )


def new_notification(message: NotificationMessage, owner: str = "") -> NewNotification:
    return NewNotification(
        notification_id=str(message.notification_id),
        request_id=message.request_id,
        channel=message.notification_type,
        user_id=str(message.user_id),
        template_code=message.template_code,
        priority=message.priority,
        created_at=message.created_at,
        language=message.language,
        owner=owner,
    )
