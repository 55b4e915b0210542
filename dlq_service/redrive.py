"""Automatic re-drive: failed messages that can heal go back to work once their provider is back.

Off unless ``AUTO_REDRIVE_ENABLED``. Every ``AUTO_REDRIVE_INTERVAL_SECONDS`` it republishes
pending messages whose reason is in ``AUTO_REDRIVE_REASONS`` (only reasons that can heal by
themselves: retries exhausted on transient errors, the broker's own expiry), only for channels
whose provider breakers are all closed (a provider still failing is left alone, and so are its
messages), and at most ``AUTO_REDRIVE_MAX_PER_MESSAGE`` times per notification, counted in the
audit trail across every failure of it. Each republish is audited as ``system:auto-redrive``;
the pace is the shared ``REPUBLISH_RATE_PER_SECOND``. Several replicas may run it: each message
is taken under a row lock, so it is republished once per pass whoever takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import structlog

from dlq_service.config import DlqSettings
from dlq_service.delivery_health import DeliveryProbe
from dlq_service.service import BulkResult, DlqService

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RedrivePolicy:
    reasons: tuple[str, ...]
    max_per_message: int
    batch: int
    interval_seconds: float

    @classmethod
    def of(cls, settings: DlqSettings) -> RedrivePolicy:
        return cls(
            reasons=tuple(settings.auto_redrive_reasons),
            max_per_message=settings.auto_redrive_max_per_message,
            batch=settings.auto_redrive_batch,
            interval_seconds=settings.auto_redrive_interval_seconds,
        )


async def redrive_once(dlq: DlqService, probe: DeliveryProbe, policy: RedrivePolicy) -> BulkResult:
    """One pass: republish what the policy allows now."""
    channels = await probe.closed_channels()
    result = await dlq.auto_redrive(
        reasons=policy.reasons,
        channels=[c.value for c in channels],
        max_per_message=policy.max_per_message,
        limit=policy.batch,
    )
    if result.matched:
        log.info(
            "dlq.auto_redrive_pass",
            channels=[c.value for c in channels],
            republished=result.republished,
            skipped=result.skipped,
            failed=result.failed,
        )
    return result


async def run_redrive(
    dlq: DlqService, probe: DeliveryProbe, policy: RedrivePolicy, stopping: asyncio.Event
) -> None:
    """Pass after pass until ``stopping`` is set (never mid-pass: a republish is not cut between
    the broker's confirm and the commit); a failed pass is logged and tried again next time."""
    log.info(
        "dlq.auto_redrive_enabled",
        reasons=list(policy.reasons),
        interval_seconds=policy.interval_seconds,
        max_per_message=policy.max_per_message,
    )
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), policy.interval_seconds)
        if stopping.is_set():
            return
        try:
            await redrive_once(dlq, probe, policy)
        except Exception as exc:  # the next pass tries again
            log.warning("dlq.auto_redrive_failed", error=repr(exc))
