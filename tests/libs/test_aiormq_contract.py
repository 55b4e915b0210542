"""The parts of aiormq the publisher reaches past the public API for.

libs/messaging/publisher.py writes a batch's frames on the aiormq channel itself and registers
their confirmations there (``publish_many``). pyproject.toml pins aiormq to one minor version;
this test fails first, and says what moved, if an upgrade changes what it relies on. The
behaviour itself is exercised against RabbitMQ in tests/libs/test_messaging.py.
"""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from aiormq.abc import ChannelFrame
from aiormq.channel import Channel

from tests.support.pins import installed, pinned_range

pytestmark = pytest.mark.unit


def test_the_installed_version_is_within_the_pinned_minor_version():
    lower, upper = pinned_range("aiormq")
    major, minor = installed("aiormq")[:2]
    assert lower[:2] == (major, minor)
    assert upper == (major, minor + 1), "aiormq must be pinned to one minor version"


def test_the_channel_internals_the_publisher_uses_are_there():
    source = inspect.getsource(Channel)
    for attribute in (
        "self.delivery_tag",
        "self.confirmations",
        "self.message_id_delivery_tag",
        "self.write_queue",
        "self.max_content_size",
        "self.publisher_confirms",
    ):
        assert attribute in source, attribute
    assert isinstance(inspect.getattr_static(Channel, "lock"), property)
    # a returned message finds its confirmation by message id, and fails it
    returned = inspect.getsource(Channel._on_return_frame)
    assert "message_id_delivery_tag.get(message_id)" in returned
    assert "confirmation.set_exception" in returned
    # a confirm resolves the future registered under its delivery tag (or all up to it)
    confirm = inspect.getsource(Channel._confirm_delivery)
    assert "self.confirmations.pop(delivery_tag)" in confirm


def test_a_channel_frame_takes_bytes_ready_to_write():
    fields = {field.name for field in dataclasses.fields(ChannelFrame)}
    assert {"payload", "should_close", "drain_future"} <= fields
    frame = ChannelFrame(payload=b"\x01", should_close=False)
    assert not frame.should_drain
