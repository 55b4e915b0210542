"""Words for people: what each failure reason means, times as people read them. Shared by the
console's pages and the command line; pure (no I/O, no web framework)."""

from __future__ import annotations

from datetime import UTC, datetime

# Why a message is in the DLQ, in words, and whether republishing can help.
REASONS: dict[str, tuple[str, str]] = {
    "retries_exhausted": (
        "Retries exhausted",
        "Every attempt failed with a temporary error (the provider was unreachable, timed out "
        "or asked to try later). Once the provider works again, republishing delivers it.",
    ),
    "permanent_error": (
        "Refused for good",
        "The provider or one of our services refused this message (a recipient that does not "
        "exist, an unknown user or template, a bad push token). Republishing it unchanged fails "
        "again unless the cause was fixed (the user, the template or the provider's settings).",
    ),
    "invalid_message": (
        "Invalid message",
        "The message could not be read as a notification (not JSON, or a field is missing or "
        "wrong). It cannot be republished; fix the sender and send it again.",
    ),
    "broker_expired": (
        "Expired in the broker",
        "RabbitMQ dead-lettered it because it waited too long in a queue.",
    ),
    "broker_rejected": ("Rejected by a consumer", "A consumer rejected it without requeueing."),
    "broker_maxlen": ("Queue full", "RabbitMQ dead-lettered it because its queue was full."),
    "broker_delivery_limit": (
        "Delivery limit reached",
        "It was delivered to consumers too many times without being settled (a consumer crashed "
        "on it each time).",
    ),
}


def reason_title(reason: str) -> str:
    return REASONS.get(reason, (reason.replace("_", " ").capitalize(), ""))[0]


def reason_text(reason: str) -> str:
    """Why, in a sentence or two, and whether republishing can help."""
    return REASONS.get(reason, ("", "No explanation is known for this reason."))[1]


def when(moment: datetime | None) -> str:
    """An absolute UTC time, to the second."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago, in the largest unit that fits ("3 min ago")."""
    if moment is None:
        return "-"
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 60:
        return "just now" if seconds < 5 else f"{seconds} s ago"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def short_id(value: object) -> str:
    text = str(value or "")
    return text[:8] if len(text) > 12 else text
