"""Email specifics of the delivery pipeline: the preference, the address, the MIME message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from libs.clients.templates import Rendered
from libs.clients.users import Preferences, UserProfile
from libs.delivery import Recipient
from libs.envelope import Channel, NotificationMessage
from libs.logging import get_correlation_id
from libs.providers import Provider, SendResult


def build_email(
    *, sender: str, message: NotificationMessage, user: UserProfile, rendered: Rendered
) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = Address(display_name=user.name, addr_spec=user.email)
    mail["Subject"] = rendered.subject or ""
    mail["Date"] = formatdate(localtime=False)
    domain = sender.rsplit("@", 1)[-1].rstrip(">") or "herald.local"
    mail["Message-ID"] = f"<{message.notification_id}@{domain}>"
    mail["X-Notification-ID"] = str(message.notification_id)
    mail["X-Template"] = f"{rendered.code} v{rendered.version} {rendered.language}"
    if cid := get_correlation_id():
        mail["X-Correlation-ID"] = cid
    mail.set_content(rendered.text or "")
    if rendered.html:
        mail.add_alternative(rendered.html, subtype="html")
    return mail


class EmailAdapter:
    channel = Channel.EMAIL

    def __init__(self, provider: Provider[EmailMessage], sender: str) -> None:
        self._provider = provider
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
    ) -> SendResult:
        mail = build_email(sender=self._sender, message=message, user=user, rendered=rendered)
        return await self._provider.send(mail)

    async def recipient_gone(self, user: UserProfile, recipient: Recipient, reason: str) -> None:
        """Addresses are the user's to fix; a refused address is reported, not pruned."""

    async def close(self) -> None:
        await self._provider.close()

    def health(self) -> Mapping[str, Any]:
        return {"providers": [self._provider.name]}
