"""What a delivery provider (SMTP relay, HTTP mail API, FCM) promises, and how it fails.

Errors are classified where they happen, by the adapter that understands the provider's protocol:
transient errors are retried later (and count against the provider's circuit breaker); permanent
ones go to failed.queue at once with their reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeVar


class ProviderError(Exception):
    transient = True

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        code: str = "provider_error",
        retry_after_ms: int = 0,
    ) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.code = code
        self.retry_after_ms = retry_after_ms


class TransientProviderError(ProviderError):
    """Timeouts, refused connections, SMTP 4xx, HTTP 429/5xx: the same send may work later."""


class PermanentProviderError(ProviderError):
    """The provider refused this message for good (SMTP 5xx recipient refused, FCM 400)."""

    transient = False


class RecipientGone(PermanentProviderError):
    """The address or device no longer exists (FCM UNREGISTERED): prune it."""


@dataclass(frozen=True)
class SendResult:
    provider: str
    provider_message_id: str | None = None


P_contra = TypeVar("P_contra", contravariant=True)


class Provider(Protocol[P_contra]):
    name: str

    async def send(self, payload: P_contra) -> SendResult: ...

    async def close(self) -> None: ...
