"""Email providers. Each one implements libs.delivery.providers.Provider[OutgoingEmail]."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class OutgoingEmail:
    """One rendered email for one recipient, independent of how it is sent."""

    sender: str
    to_address: str
    to_name: str
    subject: str
    text: str
    html: str | None
    message_id: str
    headers: dict[str, str] = field(default_factory=dict)
