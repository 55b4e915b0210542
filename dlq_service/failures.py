"""What a failed message says about itself, turned into what we store and what we republish.

Everything here is pure: no I/O. A failed message may be anything (failed.queue also receives
bodies that never parsed), so nothing here raises on bad input: it records what it can.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson

from dlq_service.models import BodyEncoding, FailedMessage, FailedState
from libs.messaging import headers as H
from libs.messaging.outcomes import INVALID_MESSAGE
from libs.messaging.topology import work_queue
from libs.notification.message import Channel, NotificationMessage

UNKNOWN_REASON = "unknown"
MAX_TEXT = 2000
_BROKER_HEADER_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
_DROPPED_ON_REPUBLISH = frozenset({*H.FAILURE_HEADERS, H.ATTEMPTS, H.WAITS, H.REPUBLISHED_COUNT})


@dataclass(frozen=True)
class IncomingFailure:
    """One message as taken from failed.queue."""

    body: bytes
    message_id: str | None
    correlation_id: str | None
    headers: Mapping[str, Any]
    priority: int = 0


def json_safe(value: Any) -> Any:
    """AMQP header values (bytes, datetimes, decimals, nested tables) as JSON-storable values."""
    if value is None or isinstance(value, bool | int | str):
        return _clean(value) if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return _clean(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {_clean(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return _clean(str(value))


def _clean(text: str) -> str:
    # PostgreSQL text and jsonb cannot hold NUL.
    return text.replace("\x00", "\ufffd")


def _text(value: Any, limit: int = MAX_TEXT) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    text = _clean(str(value))
    return text[:limit] if text else None


def _int(value: Any) -> int:
    try:
        return max(0, min(int(value), 2**31 - 1))
    except (TypeError, ValueError):
        return 0


def encode_body(body: bytes) -> tuple[str, BodyEncoding]:
    """The body as stored: text when it is UTF-8 (without NUL), base64 otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        return text, BodyEncoding.UTF8
    return base64.b64encode(body).decode("ascii"), BodyEncoding.BASE64


def decode_body(text: str, encoding: str) -> bytes:
    """The exact bytes of a stored body."""
    if encoding == BodyEncoding.BASE64:
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise ValueError("stored body is not valid base64") from exc
    return text.encode("utf-8")


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str | bytes):
        raw = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        try:
            moment = datetime.fromisoformat(raw)
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _first_death(headers: Mapping[str, Any]) -> Mapping[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        return deaths[0]
    return {}


def fingerprint(incoming: IncomingFailure) -> str:
    """Identity of one failure: the same message failing once is one row, however often delivered.

    The failure time tells two failures of one message apart; messages the broker dead-lettered
    itself carry ``x-death`` instead.
    """
    marker = incoming.headers.get(H.FAILURE_AT)
    if marker is None:
        marker = incoming.headers.get("x-death")
    digest = hashlib.sha256()
    digest.update((incoming.message_id or "").encode("utf-8", "replace"))
    digest.update(b"\x1f")
    digest.update(orjson.dumps(json_safe(marker)))
    digest.update(b"\x1f")
    digest.update(incoming.body)
    return digest.hexdigest()


def _channel(value: Any) -> Channel | None:
    text = _text(value, 64)
    if text is None:
        return None
    for channel in Channel:
        if text in (channel.value, work_queue(channel)):
            return channel
    return None


def _reason(headers: Mapping[str, Any]) -> str:
    reason = _text(headers.get(H.FAILURE_REASON), 64)
    if reason:
        return reason
    # Dead-lettered by the broker itself (rejected, expired, delivery limit): no failure headers.
    broker_reason = _text(
        headers.get("x-first-death-reason") or _first_death(headers).get("reason")
    )
    return f"broker_{broker_reason}"[:64] if broker_reason else UNKNOWN_REASON


def parse_notification(body: bytes) -> NotificationMessage | None:
    try:
        return NotificationMessage.from_bytes(body)
    except ValueError:
        return None


def describe(incoming: IncomingFailure, received_at: datetime) -> FailedMessage:
    """The row to store for a message taken from failed.queue."""
    headers = incoming.headers
    message = parse_notification(incoming.body)
    fields: dict[str, Any] = {}
    if message is None:
        # Best effort for filtering: the fields a JSON object body happens to carry.
        try:
            loose = orjson.loads(incoming.body)
        except orjson.JSONDecodeError:
            loose = None
        if isinstance(loose, dict):
            fields = {
                name: _text(loose.get(name), 200)
                for name in ("request_id", "user_id", "template_code", "notification_type")
            }
    channel = (
        message.notification_type
        if message is not None
        else _channel(fields.get("notification_type"))
        or _channel(headers.get(H.ORIGINAL_ROUTING_KEY))
        or _channel(headers.get("x-first-death-queue") or _first_death(headers).get("queue"))
    )
    body, encoding = encode_body(incoming.body)
    failed_at = (
        _parse_time(headers.get(H.FAILURE_AT))
        or _parse_time(_first_death(headers).get("time"))
        or received_at
    )
    reason = _reason(headers)
    return FailedMessage(
        id=uuid.uuid4(),
        fingerprint=fingerprint(incoming),
        message_id=_text(incoming.message_id, 255),
        notification_id=message.notification_id if message else None,
        request_id=message.request_id if message else fields.get("request_id"),
        channel=channel.value if channel else None,
        user_id=str(message.user_id) if message else fields.get("user_id"),
        template_code=message.template_code if message else fields.get("template_code"),
        reason=reason,
        error=_text(headers.get(H.FAILURE_ERROR)),
        error_class=_text(headers.get(H.FAILURE_ERROR_CLASS), 200),
        service=_text(headers.get(H.FAILURE_SERVICE), 200),
        provider=_text(headers.get(H.FAILURE_PROVIDER), 64),
        attempts=_int(headers.get(H.ATTEMPTS)),
        headers=json_safe(dict(headers)),
        body=body,
        body_encoding=encoding.value,
        correlation_id=_text(incoming.correlation_id, 255),
        priority=_int(incoming.priority),
        republishable=is_republishable(channel, message, reason),
        failed_at=failed_at,
        received_at=received_at,
        state=FailedState.PENDING.value,
        republish_count=0,
        last_republished_at=None,
    )


def is_republishable(
    channel: Channel | None, message: NotificationMessage | None, reason: str
) -> bool:
    """A message can go back to a work queue when we know which one and a consumer can read it.

    An ``invalid_message`` would only fail again; any other reason means the delivery service
    parsed the body once, so it is sent back as it is.
    """
    if channel is None:
        return False
    return message is not None or reason != INVALID_MESSAGE


def republish_number(stored: Mapping[str, Any], republish_count: int) -> int:
    """How many times this message will have been republished, counting earlier failures of it.

    A message republished before that failed again arrives with ``x-republished`` already set.
    """
    return _int(stored.get(H.REPUBLISHED_COUNT)) + republish_count + 1


def republish_headers(stored: Mapping[str, Any], republish_number: int) -> dict[str, Any]:
    """Headers of a republished message: the original ones without any trace of the failure."""
    headers = {
        name: value
        for name, value in stored.items()
        if name not in _DROPPED_ON_REPUBLISH and not name.startswith(_BROKER_HEADER_PREFIXES)
    }
    headers[H.ATTEMPTS] = 0
    headers[H.REPUBLISHED_COUNT] = republish_number
    return headers
