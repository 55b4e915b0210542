"""Property tests of the message decoder (hypothesis): whatever bytes arrive on a queue, decoding
either gives a valid message or raises ``ValueError`` (pydantic's ``ValidationError`` is one), the
only errors the consumer turns into ``invalid_message``; anything else would escape the consumer."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.notification.message import MAX_JSON_DEPTH, Channel, NotificationMessage

pytestmark = pytest.mark.fuzz  # needs no server; make test and make test-fuzz run it

PROPERTY = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

json_scalars = st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=20)
json_ints = st.integers(min_value=-(2**70), max_value=2**70)
json_values = st.recursive(
    json_scalars | json_ints,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)

VALID: dict[str, Any] = {
    "notification_id": str(uuid.uuid4()),
    "request_id": "req-1",
    "notification_type": "email",
    "user_id": str(uuid.uuid4()),
    "template_code": "welcome",
    "variables": {"name": "Ada"},
    "language": "en",
    "priority": 3,
    "metadata": {},
    "created_at": datetime.now(UTC).isoformat(),
}


def _json(value: Any) -> bytes:
    """JSON as any producer may write it (the standard library writes integers of any size)."""
    return json.dumps(value).encode()


def _decodes_or_refuses(body: bytes) -> NotificationMessage | None:
    try:
        return NotificationMessage.from_bytes(body)
    except ValueError:
        return None


@PROPERTY
@given(st.binary(max_size=512))
def test_arbitrary_bytes_decode_or_raise_value_error(body: bytes) -> None:
    _decodes_or_refuses(body)


@PROPERTY
@given(json_values)
def test_arbitrary_json_decodes_or_raises_value_error(value: Any) -> None:
    assert _decodes_or_refuses(_json(value)) is None  # no JSON value but an object is one


@PROPERTY
@given(st.dictionaries(st.sampled_from(sorted(VALID)), json_values, max_size=len(VALID)))
def test_a_message_with_any_field_replaced_decodes_or_raises_value_error(
    replaced: dict[str, Any],
) -> None:
    message = _decodes_or_refuses(_json(VALID | replaced))
    if message is not None:  # what decodes can be sent on again (the wire format holds it)
        assert NotificationMessage.from_bytes(message.to_bytes()) == message


@settings(PROPERTY, max_examples=50)
@given(st.integers(min_value=MAX_JSON_DEPTH, max_value=5_000), st.sampled_from(["[", '{"a":']))
def test_deep_nesting_is_refused_not_a_crash(depth: int, opener: str) -> None:
    nested = opener * depth
    for field in ("variables", "metadata"):
        body = _json(VALID)[:-1] + f',"{field}":{{"x":{nested}'.encode() + b"}"
        assert _decodes_or_refuses(body) is None


@PROPERTY
@given(
    variables=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    channel=st.sampled_from(list(Channel)),
    priority=st.integers(min_value=0, max_value=10),
)
def test_valid_messages_round_trip(
    variables: dict[str, Any], channel: Channel, priority: int
) -> None:
    fields = VALID | {"variables": variables, "notification_type": channel, "priority": priority}
    message = _decodes_or_refuses(_json(fields))
    if message is None:
        return  # an integer beyond 64 bits: refused, as the gateway refuses it
    assert NotificationMessage.from_bytes(message.to_bytes()) == message


@PROPERTY
@given(
    variables=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    metadata=st.none() | st.dictionaries(st.text(max_size=10), json_values, max_size=3),
    channel=st.sampled_from(list(Channel)),
    priority=st.integers(min_value=0, max_value=10),
    language=st.none() | st.sampled_from(["en", "pt-BR"]),
    request_id=st.text(min_size=1, max_size=128),
    created_at=st.datetimes(timezones=st.just(UTC)),
)
def test_the_direct_encoding_is_the_models_own(
    variables: dict[str, Any],
    metadata: dict[str, Any] | None,
    channel: Channel,
    priority: int,
    language: str | None,
    request_id: str,
    created_at: datetime,
) -> None:
    """What the gateway publishes (``encode``) is byte for byte what the model writes."""
    fields: dict[str, Any] = {
        "notification_id": uuid.uuid4(),
        "request_id": request_id,
        "notification_type": channel,
        "user_id": uuid.uuid4(),
        "template_code": "welcome",
        "variables": variables,
        "language": language,
        "priority": priority,
        "metadata": metadata,
        "created_at": created_at,
    }
    try:
        model = NotificationMessage(**(fields | {"metadata": metadata or {}}))
    except ValueError:
        return  # an integer beyond 64 bits: refused by the model, never encoded
    assert NotificationMessage.encode(**fields) == model.to_bytes()


def test_the_depth_limit_is_exact() -> None:
    def nested(levels: int) -> dict[str, Any]:
        value: Any = 1
        for _ in range(levels - 1):
            value = [value]
        return {"x": value}

    assert _decodes_or_refuses(_json(VALID | {"variables": nested(MAX_JSON_DEPTH)}))
    assert _decodes_or_refuses(_json(VALID | {"variables": nested(MAX_JSON_DEPTH + 1)})) is None
