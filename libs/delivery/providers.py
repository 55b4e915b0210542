"""What a delivery provider (SMTP relay, HTTP mail API, FCM) promises, and how it fails.

Errors are classified where they happen, by the adapter that understands the provider's protocol:
transient errors are retried later (and count against the provider's circuit breaker); permanent
ones go to failed.queue at once with their reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import structlog
from redis.exceptions import RedisError

from libs.delivery.breaker import CircuitBreaker, Permit
from libs.metrics import PROVIDER_SEND_LATENCY, PROVIDER_SENDS
from libs.storage.ratelimit import TokenBucket

log = structlog.get_logger(__name__)


class ProviderError(Exception):
    """``provider_fault`` says whether the provider itself is unwell (counts against its breaker)
    or it answered properly about this one message (a deferred or refused recipient)."""

    transient = True

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        code: str = "provider_error",
        retry_after_ms: int = 0,
        provider_fault: bool = True,
        named: bool = False,
    ) -> None:
        # ``named``: the message already names its provider(s) (a failover chain's summary)
        super().__init__(message if named else f"{provider}: {message}")
        self.provider = provider
        self.code = code
        self.retry_after_ms = retry_after_ms
        self.provider_fault = provider_fault


class TransientProviderError(ProviderError):
    """Timeouts, refused connections, SMTP 4xx, HTTP 429/5xx: the same send may work later."""


class PermanentProviderError(ProviderError):
    """The provider refused this message for good (SMTP 5xx recipient refused, FCM 400)."""

    transient = False


class RecipientGone(PermanentProviderError):
    """The address or device no longer exists (FCM UNREGISTERED): prune it."""


class OutcomeUnknown(ProviderError):
    """The request passed its point of no return and no answer came (a timeout or a broken
    connection after the SMTP end-of-data line; an HTTP request sent and no response): the
    provider may have accepted the message. It is recorded as unconfirmed and never sent again,
    here or through another provider, because a resend would be a duplicate whenever the first
    one did arrive."""

    transient = False


@dataclass(frozen=True)
class SendResult:
    provider: str
    provider_message_id: str | None = None


P_contra = TypeVar("P_contra", contravariant=True)


class Commit(Protocol):
    """Used by a provider around its point of no return (see libs/delivery/claims.py).

    ``prepare`` may wait; ``write`` hands the mark to the kernel without waiting for anything
    else; ``settle`` reads the acknowledgement afterwards.
    """

    async def prepare(self) -> None: ...

    async def write(self, provider: str) -> None: ...

    async def settle(self) -> None: ...


class Provider(Protocol[P_contra]):
    name: str

    async def send(self, payload: P_contra, commit: Commit | None = None) -> SendResult:
        """Send; a provider with a point of no return calls ``commit.write`` right before it."""
        ...

    async def close(self) -> None: ...


class ProviderUnavailable(TransientProviderError):
    """The provider was not called: its breaker is open or its send-rate quota is used up."""


@dataclass(frozen=True)
class GuardedProvider(Generic[P_contra]):
    """A provider with its circuit breaker and optional shared send-rate limit."""

    provider: Provider[P_contra]
    breaker: CircuitBreaker
    limiter: TokenBucket | None = None
    max_rate_wait: float = 1.0

    @property
    def name(self) -> str:
        return self.provider.name


class FailoverChain(Generic[P_contra]):
    """Send through the first provider that can take the message, in the configured order.

    A provider is skipped when its breaker is open or its rate quota is exhausted, and left for the
    next one when it fails transiently. A permanent error (this message or recipient is refused)
    ends the chain: another provider would refuse it too. When every provider was skipped without
    being called, the error is a :class:`ProviderUnavailable` carrying the shortest wait, so the
    message is parked without spending one of its attempts.
    """

    def __init__(self, providers: Sequence[GuardedProvider[P_contra]]) -> None:
        if not providers:
            raise ValueError("at least one provider is required")
        self.providers = list(providers)
        self.name = "+".join(p.name for p in self.providers)

    async def send(self, payload: P_contra, commit: Commit | None = None) -> SendResult:
        errors: list[ProviderError] = []
        for guarded in self.providers:
            if guarded.limiter is not None and not await guarded.limiter.take(
                max_wait=guarded.max_rate_wait
            ):
                errors.append(
                    ProviderUnavailable(
                        guarded.name,
                        "send-rate quota exhausted",
                        code="rate_limited",
                        retry_after_ms=int(guarded.max_rate_wait * 1000),
                    )
                )
                continue
            permit = await guarded.breaker.allow()
            if not permit.allowed:
                errors.append(
                    ProviderUnavailable(
                        guarded.name,
                        f"circuit breaker {permit.state.value}",
                        code="breaker_open",
                        retry_after_ms=permit.retry_after_ms,
                    )
                )
                continue
            try:
                with PROVIDER_SEND_LATENCY.labels(guarded.name).time():
                    result = await guarded.provider.send(payload, commit)
            except TransientProviderError as exc:
                PROVIDER_SENDS.labels(guarded.name, "transient_error").inc()
                await _record(guarded, permit, success=not exc.provider_fault)
                log.warning("provider.failed_over", provider=guarded.name, error=str(exc))
                errors.append(exc)
                continue
            except OutcomeUnknown:
                PROVIDER_SENDS.labels(guarded.name, "unknown").inc()
                await _record(guarded, permit, success=False)  # it did not answer in time
                raise  # no failover: the message may already be on its way
            except PermanentProviderError:
                PROVIDER_SENDS.labels(guarded.name, "permanent_error").inc()
                await _record(guarded, permit, success=True)  # the provider is healthy
                raise
            PROVIDER_SENDS.labels(guarded.name, "sent").inc()
            await _record(guarded, permit, success=True)
            return result
        called = [e for e in errors if not isinstance(e, ProviderUnavailable)]
        if called:
            last = called[-1]
            raise TransientProviderError(
                last.provider,
                "; ".join(str(e) for e in errors),
                code=last.code,
                retry_after_ms=max(e.retry_after_ms for e in called),
                named=True,
            )
        raise ProviderUnavailable(
            self.name,
            "; ".join(str(e) for e in errors),
            code=errors[0].code,
            retry_after_ms=min(e.retry_after_ms for e in errors),
            named=True,
        )

    async def health(self) -> dict[str, Any]:
        return {
            "order": [p.name for p in self.providers],
            "breakers": {p.name: (await p.breaker.state()).value for p in self.providers},
        }

    async def close(self) -> None:
        for guarded in self.providers:
            await guarded.provider.close()


async def _record(guarded: GuardedProvider[Any], permit: Permit, *, success: bool) -> None:
    """Report an outcome to the provider's breaker. Best effort: the send's own outcome stands
    whatever Redis does (a mail the relay accepted must never turn into an error to retry)."""
    try:
        await guarded.breaker.record(permit, success=success)
    except (RedisError, OSError) as exc:
        log.warning("breaker.record_failed", provider=guarded.name, error=repr(exc))
