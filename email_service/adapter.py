"""Email specifics of the delivery pipeline: the preference, the address, the message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from email_service.providers import OutgoingEmail
from libs.clients.models import Preferences, Rendered, UserProfile
from libs.delivery.pipeline import Recipient
from libs.delivery.providers import Commit, FailoverChain, SendResult
from libs.logging import get_correlation_id
from libs.notification.message import Channel, NotificationMessage


def build_email(
    *, sender: str, message: NotificationMessage, user: UserProfile, rendered: Rendered
) -> OutgoingEmail:
    domain = sender.rsplit("@", 1)[-1].rstrip(">") or "herald.local"
    headers = {
        "X-Notification-ID": str(message.notification_id),
        "X-Template": f"{rendered.code} v{rendered.version} {rendered.language}",
    }
    if cid := get_correlation_id():
        headers["X-Correlation-ID"] = cid
    return OutgoingEmail(
        sender=sender,
        to_address=user.email,
        to_name=user.name,
        subject=rendered.subject or "",
        text=rendered.text or "",
        html=rendered.html,
        message_id=f"<{message.notification_id}@{domain}>",
        headers=headers,
    )


class EmailAdapter:
    channel = Channel.EMAIL

    def __init__(self, providers: FailoverChain[OutgoingEmail], sender: str) -> None:
        self._providers = providers
        self._sender = sender

    def opted_in(self, preferences: Preferences) -> bool:
        return preferences.email

    def recipients(self, user: UserProfile) -> Sequence[Recipient]:
        return [Recipient("email", user.email)] if user.email else []

    async def send(
        self,
        message: NotificationMessage,
        user: UserProfile,
        rendered: Rendered,
        recipient: Recipient,
        commit: Commit | None = None,
    ) -> SendResult:
        email = build_email(sender=self._sender, message=message, user=user, rendered=rendered)
        return await self._providers.send(email, commit)

    async def recipient_gone(self, user: UserProfile, recipient: Recipient, reason: str) -> None:
        """Addresses are the user's to fix; a refused address is reported, not pruned."""

    async def close(self) -> None:
        await self._providers.close()

    async def health(self) -> Mapping[str, Any]:
        return await self._providers.health()
