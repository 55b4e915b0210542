"""Prometheus metrics of dlq_service (module-level: one registration per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from libs.notification.message import Channel

UNKNOWN_CHANNEL = "unknown"

PENDING = Gauge(
    "dlq_pending_failed_messages", "Stored failed messages waiting for a decision", ["channel"]
)
RECEIVED = Counter(
    "dlq_failed_messages_received_total", "Failed messages stored", ["channel", "reason"]
)
REPUBLISHED = Counter(
    "dlq_failed_messages_republished_total", "Failed messages republished", ["channel"]
)
DISCARDED = Counter("dlq_failed_messages_discarded_total", "Failed messages discarded", ["channel"])
ARCHIVED = Counter("dlq_failed_messages_archived_total", "Failed messages archived", ["channel"])

_KNOWN_REASONS = frozenset(
    {
        "invalid_message",
        "permanent_error",
        "retries_exhausted",
        "unknown",
        "broker_rejected",
        "broker_expired",
        "broker_maxlen",
        "broker_delivery_limit",
    }
)


def channel_label(channel: str | None) -> str:
    return channel or UNKNOWN_CHANNEL


def reason_label(reason: str) -> str:
    """Reasons come from message headers: bound the label values."""
    return reason if reason in _KNOWN_REASONS else "other"


def set_pending(by_channel: dict[str, int]) -> None:
    for channel in (*(c.value for c in Channel), UNKNOWN_CHANNEL):
        PENDING.labels(channel).set(by_channel.get(channel, 0))
