"""The parts of aiosmtplib the SMTP provider reaches past the public API for.

email_service/providers/smtp.py writes the end-of-data line itself (to put the commit mark next
to the relay's point of no return), so it relies on aiosmtplib's protocol object. pyproject.toml
pins the major version; this test fails first, and says what moved, if an upgrade changes them.
"""

from __future__ import annotations

import asyncio
import inspect

import aiosmtplib
import pytest
from aiosmtplib.protocol import SMTPProtocol

from tests.support.pins import installed, pinned_range

pytestmark = pytest.mark.unit


def test_the_installed_major_version_is_the_pinned_one():
    lower, upper = pinned_range("aiosmtplib")
    major = installed("aiosmtplib")[0]
    assert lower[0] == major
    assert upper == (major + 1,), "aiosmtplib must be pinned to one major version"


def test_a_client_exposes_its_protocol_and_runs_raw_commands():
    client = aiosmtplib.SMTP(hostname="relay.invalid")
    assert "protocol" in vars(client)  # None until connected, then the SMTPProtocol
    execute = inspect.signature(aiosmtplib.SMTP.execute_command)
    assert "timeout" in execute.parameters
    assert inspect.iscoroutinefunction(aiosmtplib.SMTP.execute_command)


def test_the_protocol_writes_raw_bytes_and_reads_one_reply_with_a_timeout():
    assert list(inspect.signature(SMTPProtocol.write).parameters) == ["self", "data"]
    read = inspect.signature(SMTPProtocol.read_response)
    assert "timeout" in read.parameters
    assert inspect.iscoroutinefunction(SMTPProtocol.read_response)
    # the transport (for TCP_CORK and the write-buffer size) is the asyncio protocol's own
    assert "self.transport" in inspect.getsource(SMTPProtocol)
    assert issubclass(SMTPProtocol, asyncio.Protocol)
