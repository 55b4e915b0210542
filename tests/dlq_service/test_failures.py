"""Pure functions that turn a failed AMQP message into a stored record and back."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from dlq_service.failures import (
    IncomingFailure,
    decode_body,
    describe,
    encode_body,
    fingerprint,
    json_safe,
    republish_headers,
    republish_number,
)
from libs.messaging import headers as H
from libs.notification.message import Channel
from tests.dlq_service.helpers import failure_headers, incoming, notification

NOW = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


def test_json_safe_converts_amqp_values() -> None:
    value = {
        "text": "a\x00b",
        "bytes": b"caf\xc3\xa9",
        "binary": bytearray(b"\xff\xfe"),
        "when": NOW,
        "amount": Decimal("2.50"),
        "nan": float("nan"),
        "nested": {"list": [1, b"x", None, True]},
        "tuple": (1, 2),
    }
    assert json_safe(value) == {
        "text": "a\ufffdb",
        "bytes": "café",
        "binary": {"base64": base64.b64encode(b"\xff\xfe").decode()},
        "when": NOW.isoformat(),
        "amount": "2.50",
        "nan": "nan",
        "nested": {"list": [1, "x", None, True]},
        "tuple": [1, 2],
    }


def test_bodies_round_trip_exactly() -> None:
    for body in (b'{"a": "caf\xc3\xa9"}', b"\xff\x00binary", b"nul\x00inside", b""):
        text, encoding = encode_body(body)
        assert decode_body(text, encoding) == body
    assert encode_body(b"plain")[1] == "utf-8"
    assert encode_body(b"\xff")[1] == "base64"
    assert encode_body(b"a\x00")[1] == "base64"  # PostgreSQL text cannot hold NUL


def test_fingerprint_is_one_per_failure() -> None:
    message = notification()
    first = incoming(message, failure_headers(failed_at=NOW))
    assert fingerprint(first) == fingerprint(incoming(message, failure_headers(failed_at=NOW)))
    later = incoming(message, failure_headers(failed_at=NOW + timedelta(seconds=1)))
    assert fingerprint(first) != fingerprint(later)
    other_body = incoming(notification(), failure_headers(failed_at=NOW), message_id="same")
    assert fingerprint(other_body) != fingerprint(
        incoming(notification(), failure_headers(failed_at=NOW), message_id="same")
    )


def test_describe_a_valid_message() -> None:
    message = notification(Channel.PUSH)
    row = describe(
        incoming(message, failure_headers(routing_key="push", attempts="3", failed_at=NOW)),
        received_at=NOW + timedelta(minutes=1),
    )
    assert row.notification_id == message.notification_id
    assert row.channel == "push"
    assert row.attempts == 3
    assert row.failed_at == NOW
    assert row.received_at == NOW + timedelta(minutes=1)
    assert row.republishable is True
    assert row.state == "pending"


def test_describe_a_message_the_broker_dead_lettered_itself() -> None:
    died = datetime(2031, 1, 1, tzinfo=UTC)
    failure = IncomingFailure(
        body=notification(Channel.EMAIL).to_bytes(),
        message_id="m-1",
        correlation_id=None,
        headers={
            "x-first-death-reason": "delivery_limit",
            "x-first-death-queue": "email.queue",
            "x-death": [
                {"count": 1, "reason": "delivery_limit", "queue": "email.queue", "time": died}
            ],
        },
    )
    row = describe(failure, received_at=NOW)
    assert row.reason == "broker_delivery_limit"
    assert row.channel == "email"
    assert row.failed_at == died
    assert row.attempts == 0
    assert row.republishable is True


def test_describe_garbage_never_raises() -> None:
    for body, headers in (
        (b"", {}),
        (b"[1, 2]", {H.ATTEMPTS: "many", H.FAILURE_AT: "not a time"}),
        (b'{"request_id": 5, "notification_type": "fax"}', {H.FAILURE_REASON: b"bytes!"}),
        (b"\xff" * 10, {"x-death": "not a list"}),
    ):
        row = describe(
            IncomingFailure(body=body, message_id=None, correlation_id=None, headers=headers),
            received_at=NOW,
        )
        assert row.notification_id is None
        assert row.channel is None
        assert row.republishable is False
        assert row.failed_at == NOW
        assert row.attempts == 0


def test_invalid_message_with_a_known_channel_is_not_republishable() -> None:
    row = describe(
        incoming(b"{}", failure_headers(reason="invalid_message", routing_key="email")),
        received_at=NOW,
    )
    assert row.channel == "email"
    assert row.republishable is False


def test_republish_headers_drop_every_trace_of_the_failure() -> None:
    stored = json_safe(
        {
            **failure_headers(attempts=3),
            H.WAITS: 4,
            H.REPUBLISHED_COUNT: 1,
            "x-death": [{"count": 1}],
            "x-first-death-queue": "email.queue",
            "x-trace": "keep-me",
        }
    )
    assert republish_headers(stored, 2) == {
        "x-trace": "keep-me",
        H.ATTEMPTS: 0,
        H.REPUBLISHED_COUNT: 2,
    }


def test_republish_number_counts_earlier_generations() -> None:
    assert republish_number({}, 0) == 1
    assert republish_number({}, 2) == 3
    # the message was republished twice before and failed again: this is its third republish
    assert republish_number({H.REPUBLISHED_COUNT: 2}, 0) == 3
    assert republish_number({H.REPUBLISHED_COUNT: "junk"}, 0) == 1
