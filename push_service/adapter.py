"""Push specifics of the delivery pipeline: the preference, the devices, the FCM message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from libs.clients.models import Preferences, Rendered, UserProfile
from libs.clients.users import UserDirectory
from libs.delivery.pipeline import Recipient
from libs.delivery.providers import Commit, FailoverChain, SendResult
from libs.notification.message import Channel, NotificationMessage

HIGH_PRIORITY = 5


def build_fcm_message(
    message: NotificationMessage, rendered: Rendered, token: str
) -> dict[str, Any]:
    """An FCM v1 ``message`` for one device token (title, body, image, link)."""
    notification: dict[str, str] = {"title": rendered.title or "", "body": rendered.body or ""}
    if rendered.image:
        notification["image"] = rendered.image
    data = {"notification_id": str(message.notification_id)}
    data.update({k: str(v) for k, v in message.metadata.items() if isinstance(v, str | int)})
    if rendered.link:
        data["link"] = rendered.link
    fcm: dict[str, Any] = {
        "token": token,
        "notification": notification,
        "data": data,
        "android": {"priority": "high" if message.priority >= HIGH_PRIORITY else "normal"},
    }
    if rendered.link:
        fcm["webpush"] = {"fcm_options": {"link": rendered.link}}
        fcm["apns"] = {"fcm_options": {}, "payload": {"aps": {"category": "link"}}}
    return fcm


class PushAdapter:
    channel = Channel.PUSH

    def __init__(self, provider: FailoverChain[dict[str, Any]], users: UserDirectory) -> None:
        self._provider = provider
        self._users = users

    def opted_in(self, preferences: Preferences) -> bool:
        return preferences.push

    def recipients(self, user: UserProfile) -> Sequence[Recipient]:
        return [Recipient(device.id, device.token) for device in user.push_tokens]

    async def send(
        self,
        message: NotificationMessage,
        user: UserProfile,
        rendered: Rendered,
        recipient: Recipient,
        commit: Commit | None = None,
    ) -> SendResult:
        return await self._provider.send(
            build_fcm_message(message, rendered, recipient.address), commit
        )

    async def recipient_gone(self, user: UserProfile, recipient: Recipient, reason: str) -> None:
        await self._users.invalidate_push_token(user.id, recipient.address, reason)

    async def close(self) -> None:
        await self._provider.close()

    async def health(self) -> Mapping[str, Any]:
        return await self._provider.health()
