"""The publish frames we encode are the bytes pamqp encodes for the same message."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, frame, header
from pamqp.body import ContentBody

from libs.messaging.frames import field_table, publish_frames, shortstr

pytestmark = pytest.mark.unit  # needs no server

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40).filter(
    lambda s: len(s.encode()) <= 255
)
# pamqp refuses exchange and queue names outside this alphabet (RabbitMQ's rule is looser)
amqp_names = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:"),
    max_size=40,
)
header_values = st.one_of(
    st.integers(min_value=-(2**31), max_value=2**31 - 1), st.text(max_size=30), st.booleans()
)


def pamqp_frames(headers: dict[str, Any] | None, **m: Any) -> bytes:
    """The same frames through pamqp's generic encoders (what aiormq sends)."""
    body: bytes = m["body"]
    channel: int = m["channel"]
    max_body_frame: int = m["max_body_frame"]
    properties = commands.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id=m["message_id"],
        correlation_id=m["correlation_id"],
        headers=headers,
        priority=m["priority"],
        expiration=m["expiration"],
        timestamp=datetime.fromtimestamp(m["timestamp"], UTC),
    )
    publish = commands.Basic.Publish(
        exchange=m["exchange"], routing_key=m["routing_key"], mandatory=m["mandatory"]
    )
    out = frame.marshal(publish, channel)
    out += frame.marshal(header.ContentHeader(0, len(body), properties), channel)
    for start in range(0, len(body), max_body_frame):
        out += frame.marshal(ContentBody(body[start : start + max_body_frame]), channel)
    return out


@settings(max_examples=300, deadline=None)
@given(
    channel=st.integers(min_value=1, max_value=2047),
    max_body_frame=st.integers(min_value=1, max_value=300),
    exchange=amqp_names,
    routing_key=amqp_names,
    mandatory=st.booleans(),
    body=st.binary(max_size=1000),
    message_id=names.filter(bool),
    correlation_id=st.none() | names,
    headers=st.none() | st.dictionaries(names.filter(bool), header_values, max_size=5),
    priority=st.integers(min_value=0, max_value=10),
    expiration=st.none() | st.integers(min_value=0, max_value=10**9).map(str),
    timestamp=st.integers(min_value=0, max_value=2**33),
)
def test_frames_are_what_pamqp_encodes(**message: object) -> None:
    headers = message.pop("headers")
    ours = publish_frames(
        **message,  # type: ignore[arg-type]
        headers_table=None if headers is None else field_table(headers),  # type: ignore[arg-type]
    )
    assert ours == pamqp_frames(**message, headers=headers)  # type: ignore[arg-type]


def test_a_message_without_an_id_is_refused() -> None:
    with pytest.raises(ValueError, match="message_id"):
        publish_frames(
            channel=1,
            max_body_frame=100,
            exchange="",
            routing_key="q",
            mandatory=True,
            body=b"{}",
            message_id="",
            correlation_id=None,
            headers_table=None,
            priority=0,
            expiration=None,
            timestamp=0,
        )


def test_a_short_string_over_255_bytes_is_refused() -> None:
    assert shortstr("é" * 127) == b"\xfe" + "é".encode() * 127
    with pytest.raises(ValueError, match="255 bytes"):
        shortstr("é" * 128)
