"""The delivery pipeline both email_service and push_service run, one message at a time.

For each notification: mark it ``processing``; check the user's preference for the channel (opted
out -> ``skipped``); fetch the user and the rendered template; for each recipient (the email
address, or each live device) claim the send, call the provider, mark the claim ``sent``; then
``delivered``. Failures are classified into the consumer's decisions: transient ones are retried
through the delay queues, permanent ones are dead-lettered with their reason.

Channel specifics (which preference, which recipients, how to send) come from a
:class:`ChannelAdapter`; this module has no broker, SMTP or FCM imports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from uuid import UUID

import structlog
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from libs.clients.errors import UpstreamError, UpstreamRejected
from libs.clients.models import Preferences, Rendered, UserProfile
from libs.delivery.claims import Claim, ClaimState
from libs.delivery.decision import (
    Busy,
    SendOutcome,
    Verdict,
    decide_after_error,
    decide_after_sends,
)
from libs.delivery.providers import (
    Commit,
    OutcomeUnknown,
    ProviderError,
    RecipientGone,
    SendResult,
)
from libs.messaging.outcomes import Ack, DeadLetter, Decision, Delivery
from libs.metrics import DELIVERY_LATENCY, NOTIFICATIONS, seconds_since
from libs.notification.message import Channel, NotificationMessage
from libs.notification.status import TERMINAL_STATUSES, NewNotification, Status, StatusStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Recipient:
    key: str
    """Stable identity for the send claim (``email``, or a device id)."""
    address: str


class ChannelAdapter(Protocol):
    channel: Channel

    def opted_in(self, preferences: Preferences) -> bool: ...

    def recipients(self, user: UserProfile) -> Sequence[Recipient]: ...

    async def send(
        self,
        message: NotificationMessage,
        user: UserProfile,
        rendered: Rendered,
        recipient: Recipient,
        commit: Commit | None = None,
    ) -> SendResult: ...

    async def recipient_gone(self, user: UserProfile, recipient: Recipient, reason: str) -> None:
        """The provider says the recipient no longer exists (prune it)."""
        ...


class UserLookup(Protocol):
    """``libs.clients.users.UserDirectory``: cached reads from user_service."""

    async def get_preferences(self, user_id: UUID | str) -> Preferences: ...

    async def get_user(self, user_id: UUID | str) -> UserProfile: ...


class Renderer(Protocol):
    """``libs.clients.templates.RenderClient``: cached renders from template_service."""

    async def render(
        self, code: str, language: str | None, variables: dict[str, Any]
    ) -> Rendered: ...


class Claims(Protocol):
    """``libs.delivery.claims.SendClaims``: at most one send per notification and recipient."""

    async def acquire(self, channel: str, notification_id: str, recipient: str) -> Claim: ...

    def commit_mark(self, claim: Claim) -> Commit: ...

    async def mark_sent(self, claim: Claim, provider: str) -> None: ...

    async def mark_unknown(self, claim: Claim, provider: str) -> None: ...

    async def release(self, claim: Claim) -> None: ...


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeliveryPipeline:
    def __init__(
        self,
        *,
        adapter: ChannelAdapter,
        users: UserLookup,
        renderer: Renderer,
        status: StatusStore,
        claims: Claims,
        service: str,
    ) -> None:
        self._adapter = adapter
        self._channel = adapter.channel
        self._users = users
        self._renderer = renderer
        self._status = status
        self._claims = claims
        self._service = service

    async def handle(self, delivery: Delivery[NotificationMessage]) -> Decision:
        message = delivery.message
        nid = str(message.notification_id)
        if message.notification_type is not self._channel:
            return DeadLetter(
                "invalid_message",
                f"a {message.notification_type} notification on the {self._channel} queue",
                "WrongQueue",
            )
        try:
            return await self._deliver(message, delivery)
        except (UpstreamError, RedisError) as exc:
            # Nothing was sent that is not recorded in its claim: whatever failed here, trying
            # again later is safe. Our own services or Redis being away is not the message's
            # fault: it waits without spending an attempt.
            after = decide_after_error(exc)
            if after.verdict is Verdict.WAITING_FOR_DEPENDENCY:
                await self._note_wait(nid, after.verdict.value, after.error)
            return after.decision

    async def _deliver(
        self, message: NotificationMessage, delivery: Delivery[NotificationMessage]
    ) -> Decision:
        nid = str(message.notification_id)
        started = await self._start(message, delivery)
        if started is not None:
            return started
        try:
            user = await self._users.get_user(message.user_id)  # preferences included
            if not self._adapter.opted_in(user.preferences):
                raise _Skip(f"user opted out of {self._channel.value} notifications")
            recipients = self._adapter.recipients(user)
            if not recipients:
                raise _Skip(f"user has no {self._channel.value} address or device")
            rendered = await self._render(message, user)
            return await self._send_all(message, user, rendered, recipients)
        except _Skip as skip:
            await self._finish(nid, Status.SKIPPED, "skipped", error=skip.reason)
            NOTIFICATIONS.labels(self._channel.value, "skipped").inc()
            return Ack("skipped")

    async def _note_wait(self, nid: str, event: str, error: str | None) -> None:
        """Record why a message waits; best effort (Redis may be the reason it waits)."""
        try:
            await self._status.transition(
                nid, None, event=event, service=self._service, error=error
            )
        except RedisError as exc:
            log.warning("delivery.wait_not_recorded", notification_id=nid, error=repr(exc))

    async def on_dead_letter(
        self, delivery: Delivery[NotificationMessage] | None, reason: str, error: str
    ) -> None:
        """Record ``failed`` once the message is safely in failed.queue (retried briefly; if Redis
        stays away, dlq_service records it when it stores the message)."""
        if delivery is None:
            return
        nid = str(delivery.message.notification_id)
        NOTIFICATIONS.labels(self._channel.value, "failed").inc()
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(RedisError),
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.2),
            reraise=True,
        ):
            with attempt:
                await self._finish(
                    nid, Status.FAILED, "failed", error=error, details={"reason": reason}
                )

    async def _start(
        self, message: NotificationMessage, delivery: Delivery[NotificationMessage]
    ) -> Decision | None:
        """Mark ``processing``; returns a decision when there is nothing (more) to do."""
        nid = str(message.notification_id)
        attempt = delivery.attempts + 1
        details = {
            "attempt": attempt,
            "redelivered": delivery.redelivered or None,
            "waits": delivery.waits or None,
        }
        result = await self._status.transition(
            nid,
            Status.PROCESSING,
            event="processing",
            service=self._service,
            attempt=attempt,
            details=details,
        )
        if result.missing:
            # The status expired or the message was published around the gateway: recreate it.
            await self._status.create(
                NewNotification(
                    notification_id=nid,
                    request_id=message.request_id,
                    channel=message.notification_type,
                    user_id=str(message.user_id),
                    template_code=message.template_code,
                    priority=message.priority,
                    created_at=message.created_at,
                    language=message.language,
                )
            )
            await self._status.transition(
                nid,
                Status.PROCESSING,
                event="processing",
                service=self._service,
                attempt=attempt,
                details=details,
            )
        elif not result.applied and result.previous in TERMINAL_STATUSES:
            log.info("delivery.already_final", notification_id=nid, status=result.previous)
            return Ack("already_final")
        return None

    async def _render(self, message: NotificationMessage, user: UserProfile) -> Rendered:
        variables: dict[str, Any] = {
            "user": {"name": user.name, "email": user.email},
            **message.variables,
        }
        rendered = await self._renderer.render(
            message.template_code, message.language or user.language, variables
        )
        if rendered.type is not self._channel:
            raise UpstreamRejected(
                "template_service",
                f"template {message.template_code!r} is a {rendered.type} template",
                code="template_type_mismatch",
            )
        return rendered

    async def _send_all(
        self,
        message: NotificationMessage,
        user: UserProfile,
        rendered: Rendered,
        recipients: Sequence[Recipient],
    ) -> Decision:
        nid = str(message.notification_id)
        outcomes = await asyncio.gather(
            *(self._send_one(message, user, rendered, r) for r in recipients)
        )
        after = decide_after_sends(outcomes)
        if after.verdict is Verdict.ATTEMPT_FAILED:
            await self._status.transition(
                nid,
                None,
                event=after.verdict.value,
                service=self._service,
                provider=after.provider,
                error=after.error,
            )
        elif after.verdict is Verdict.WAITING_FOR_PROVIDER:
            await self._status.transition(
                nid, None, event=after.verdict.value, service=self._service, error=after.error
            )
        elif after.verdict is Verdict.DELIVERED:
            await self._finish(
                nid,
                Status.DELIVERED,
                after.verdict.value,
                provider=after.provider,
                details={
                    "recipients": after.recipients_sent,
                    "refused": after.recipients_refused or None,
                    "unknown": after.recipients_unknown or None,
                },
            )
            NOTIFICATIONS.labels(self._channel.value, "delivered").inc()
            DELIVERY_LATENCY.labels(self._channel.value).observe(seconds_since(message.created_at))
        elif after.verdict is Verdict.UNCONFIRMED:
            await self._finish(
                nid,
                Status.UNCONFIRMED,
                after.verdict.value,
                provider=after.provider,
                error=after.error,
                details={"unknown": after.recipients_unknown},
            )
            NOTIFICATIONS.labels(self._channel.value, "unconfirmed").inc()
        return after.decision

    async def _send_one(
        self,
        message: NotificationMessage,
        user: UserProfile,
        rendered: Rendered,
        recipient: Recipient,
    ) -> SendOutcome:
        nid = str(message.notification_id)
        claim = await self._claims.acquire(self._channel.value, nid, recipient.key)
        if claim.state is ClaimState.SENT:
            log.info(
                "delivery.duplicate_suppressed",
                notification_id=nid,
                recipient=recipient.key,
                assumed=claim.assumed,
                unknown=claim.unknown,
            )
            if claim.unknown:
                return OutcomeUnknown(
                    claim.provider or "unknown", "an earlier attempt's outcome is unknown"
                )
            return SendResult(provider=claim.provider or "unknown")
        if claim.state is ClaimState.BUSY:
            return Busy(recipient.key)
        commit = self._claims.commit_mark(claim)
        try:
            result = await self._adapter.send(message, user, rendered, recipient, commit)
        except OutcomeUnknown as exc:
            # past the point of no return with no answer: keep the claim, never send again
            await self._claims.mark_unknown(claim, exc.provider)
            log.warning("delivery.outcome_unknown", notification_id=nid, error=str(exc))
            return exc
        except ProviderError as exc:
            await self._claims.release(claim)
            if isinstance(exc, RecipientGone):
                await self._prune(user, recipient, exc)
            return exc
        except BaseException:
            if claim.committing is None:  # a committing claim may have reached the relay
                await self._claims.release(claim)
            raise
        # The provider accepted: from here on nothing may turn this into a failure to retry.
        await self._claims.mark_sent(claim, result.provider)
        return result

    async def _prune(self, user: UserProfile, recipient: Recipient, exc: ProviderError) -> None:
        try:
            await self._adapter.recipient_gone(user, recipient, exc.code)
        except UpstreamError as error:  # pruning is best effort; the send outcome stands
            log.warning("delivery.prune_failed", recipient=recipient.key, error=str(error))

    async def _finish(
        self,
        nid: str,
        status: Status,
        event: str,
        *,
        provider: str | None = None,
        error: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        await self._status.transition(
            nid,
            status,
            event=event,
            service=self._service,
            provider=provider,
            error=error,
            details=details,
        )
