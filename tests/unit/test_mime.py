"""The mail's bytes, written out directly, read back by the standard library as they were meant."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from email_service.mime import MAX_LINE, encode
from email_service.providers import OutgoingEmail

pytestmark = pytest.mark.unit


def outgoing(**overrides: object) -> OutgoingEmail:
    values: dict[str, object] = {
        "sender": "Herald <no-reply@herald.local>",
        "to_address": "ada@example.com",
        "to_name": "Ada Lovelace",
        "subject": "Welcome, Ada!",
        "text": "Hello Ada,\nwelcome.",
        "html": "<p>Hello Ada,</p>",
        "message_id": "<id-1@herald.local>",
        "headers": {"X-Notification-ID": "n-1"},
    }
    return OutgoingEmail(**(values | overrides))  # type: ignore[arg-type]


def read(data: bytes):
    lines = data.split(b"\r\n")
    assert lines[-1] == b""  # ends with CRLF
    undotted = b"\r\n".join(line[1:] if line.startswith(b"..") else line for line in lines)
    return message_from_bytes(undotted, policy=policy.default)


@pytest.mark.parametrize("eight_bit", [True, False])
def test_headers_and_parts_read_back_as_written(eight_bit: bool) -> None:
    email = outgoing(
        subject="Olá Ada, " + "um assunto bem longo " * 8,
        to_name="Ana Conceição",
        text="Olá,\n.ponto no início\n" + "x" * 2000,
        html="<p>Olá</p>",
    )
    data = encode(email, eight_bit=eight_bit)
    assert all(len(line) <= MAX_LINE for line in data.split(b"\r\n"))
    assert data.isascii() is not eight_bit
    message = read(data)
    assert message["Subject"] == email.subject.strip()
    assert message["To"] == "Ana Conceição <ada@example.com>"
    assert message["From"] == "Herald <no-reply@herald.local>"
    assert message["X-Notification-ID"] == "n-1"
    plain = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert plain is not None
    assert html is not None
    assert plain.get_content().replace("\r\n", "\n").rstrip("\n") == email.text
    assert html.get_content().strip() == "<p>Olá</p>"


def test_plain_text_only_is_a_single_part() -> None:
    message = read(encode(outgoing(html=None), eight_bit=False))
    assert not message.is_multipart()
    assert message.get_content().replace("\r\n", "\n").rstrip("\n") == "Hello Ada,\nwelcome."


def test_line_breaks_in_header_values_never_reach_the_wire() -> None:
    data = encode(outgoing(subject="a\u2028b\rc\nBcc: x@evil.test"), eight_bit=True)
    headers = data.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc:" not in headers
    assert read(data)["Subject"] == "a b c Bcc: x@evil.test"
