"""What to do with a notification once each of its recipients has an outcome: a pure function.

The pipeline sends to every recipient (an email address, or each of a user's devices) and collects
one outcome per recipient: sent, a provider error, or busy (another live consumer holds the send
claim). :func:`decide_after_sends` turns those outcomes into the consumer's decision and the status
event to record. It reads nothing and writes nothing, so every rule below is tested in memory.

The rules, in order:

1. **Busy** (and nothing failed transiently): another consumer is sending. Look again shortly,
   without spending an attempt; by then its claim says sent or was released.
2. **Attempted**: a provider was called and failed transiently. Retry with an attempt spent, after
   at least the longest ``Retry-After`` any provider asked for. Recipients already sent are marked
   in their claims, so the retry sends only to the others (partial success is never resent).
3. **Unavailable**: no provider was called (every breaker open, every quota used up). Wait without
   spending an attempt, for the shortest time any provider named.
4. **Sent** to at least one recipient (the others refused for good, or unknown): delivered.
5. **Unknown**: a provider passed its point of no return and never answered, for every recipient
   not refused: unconfirmed. Acked, never sent again (the first send may have arrived).
6. Otherwise every recipient was refused permanently: dead-letter with the first error.

:func:`decide_after_error` covers what can go wrong before any provider is called: our own user
or template service says the user or template does not exist (dead-letter: permanent), refuses
the request (dead-letter), or cannot be reached with nothing usable cached (wait without an
attempt: the message is not at fault); Redis failing mid-way (wait without an attempt too: a
Redis fault is ours, and every send already made is recorded in its claim).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from redis.exceptions import RedisError

from libs.clients.errors import UpstreamError, UpstreamNotFound, UpstreamRejected
from libs.delivery.providers import (
    OutcomeUnknown,
    ProviderError,
    ProviderUnavailable,
    SendResult,
)
from libs.messaging.outcomes import PERMANENT_ERROR, Ack, DeadLetter, Decision, Retry

REDIS_WAIT_MS = 2000
"""A message that met a Redis fault waits at least this long (faults last seconds, not ms)."""


@dataclass(frozen=True)
class Busy:
    """Another live consumer holds this recipient's send claim."""

    recipient: str


SendOutcome = SendResult | ProviderError | Busy


class Verdict(StrEnum):
    """What happened, as the status timeline names it."""

    BUSY = "claim_busy"
    ATTEMPT_FAILED = "attempt_failed"
    WAITING_FOR_PROVIDER = "waiting_for_provider"
    DELIVERED = "delivered"
    UNCONFIRMED = "unconfirmed"
    REFUSED = "refused"
    WAITING_FOR_DEPENDENCY = "waiting_for_dependency"
    WAITING_FOR_REDIS = "waiting_for_redis"
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    decision: Decision
    provider: str | None = None
    """The provider that failed (attempted), or the ones that delivered (comma-separated)."""
    error: str | None = None
    recipients_sent: int = 0
    recipients_refused: int = 0
    recipients_unknown: int = 0


def decide_after_sends(outcomes: Sequence[SendOutcome]) -> Outcome:
    """The decision for a notification whose recipients ended as ``outcomes`` (at least one)."""
    if not outcomes:
        raise ValueError("a notification without recipients is skipped before sending")
    sent = [o for o in outcomes if isinstance(o, SendResult)]
    unknown = [o for o in outcomes if isinstance(o, OutcomeUnknown)]
    errors = [o for o in outcomes if isinstance(o, ProviderError) and o not in unknown]
    transient = [e for e in errors if e.transient]
    attempted = [e for e in transient if not isinstance(e, ProviderUnavailable)]
    busy = [o for o in outcomes if isinstance(o, Busy)]
    if busy and not transient:
        error = f"send to {busy[0].recipient} is claimed by another consumer"
        return Outcome(
            Verdict.BUSY,
            Retry(error=error, error_class="SendClaimBusy", count_attempt=False),
            error=error,
        )
    if attempted:
        first = attempted[0]
        return Outcome(
            Verdict.ATTEMPT_FAILED,
            Retry(
                error=str(first),
                error_class=type(first).__name__,
                not_before_ms=max(e.retry_after_ms for e in attempted),
                provider=first.provider,
            ),
            provider=first.provider,
            error=str(first),
        )
    if transient:
        first = transient[0]
        return Outcome(
            Verdict.WAITING_FOR_PROVIDER,
            Retry(
                error=str(first),
                error_class=type(first).__name__,
                not_before_ms=min(e.retry_after_ms for e in transient),
                count_attempt=False,
            ),
            error=str(first),
        )
    if sent:
        return Outcome(
            Verdict.DELIVERED,
            Ack("delivered"),
            provider=",".join(sorted({s.provider for s in sent})),
            recipients_sent=len(sent),
            recipients_refused=len(errors),
            recipients_unknown=len(unknown),
        )
    if unknown:
        first_unknown = unknown[0]
        return Outcome(
            Verdict.UNCONFIRMED,
            Ack("unconfirmed"),
            provider=first_unknown.provider,
            error=str(first_unknown),
            recipients_refused=len(errors),
            recipients_unknown=len(unknown),
        )
    first = errors[0]
    return Outcome(
        Verdict.REFUSED,
        DeadLetter(PERMANENT_ERROR, str(first), first.code, provider=first.provider),
        error=str(first),
        recipients_refused=len(errors),
    )


def decide_after_error(error: UpstreamError | RedisError) -> Outcome:
    """The decision when the pipeline failed before (or around) calling any provider."""
    if isinstance(error, UpstreamNotFound):
        error_class = "UserNotFound" if error.service == "user_service" else "TemplateNotFound"
        return Outcome(
            Verdict.NOT_FOUND,
            DeadLetter(PERMANENT_ERROR, str(error), error_class),
            error=str(error),
        )
    if isinstance(error, UpstreamRejected):
        return Outcome(
            Verdict.REFUSED,
            DeadLetter(PERMANENT_ERROR, str(error), error.code or "UpstreamRejected"),
            error=str(error),
        )
    if isinstance(error, UpstreamError):
        return Outcome(
            Verdict.WAITING_FOR_DEPENDENCY,
            Retry(error=str(error), error_class=type(error).__name__, count_attempt=False),
            error=str(error),
        )
    return Outcome(
        Verdict.WAITING_FOR_REDIS,
        Retry(
            error=f"redis: {error!r}",
            error_class="RedisError",
            not_before_ms=REDIS_WAIT_MS,
            count_attempt=False,
        ),
        error=repr(error),
    )
