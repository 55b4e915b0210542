"""Building the bytes of a mail: one multipart/alternative message, written out directly.

The standard library's ``EmailMessage`` with a policy parses and re-folds every header through its
header registry and value parser: a quarter of email_service's CPU per mail went there. The shape
of our mails is always the same (a plain-text part, an optional HTML part, a few headers), so the
message is written out here: headers encoded as RFC 2047 words only when they are not ASCII,
bodies sent as they are when the relay takes them (7-bit, or 8-bit with 8BITMIME) and as
quoted-printable otherwise. Readers (tests, the sink, any mail client) parse it with the standard
library.
"""

from __future__ import annotations

import binascii
import re
import uuid
from email.header import Header
from email.utils import formataddr, formatdate, parseaddr

from email_service.providers import OutgoingEmail

# Characters that end a line somewhere (str.splitlines: \n \r \v \f \x1c-\x1e \x85 \u2028
# \u2029) or are otherwise control characters: in a header value they would break the header (or
# make a mail library refuse the message on every attempt), so they become spaces.
_NOT_IN_A_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]+")
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
MAX_LINE = 998  # RFC 5321 4.5.3.1.6, without the CRLF


def header_text(value: str) -> str:
    """A header value (subject, display name) on one line, without control characters."""
    return _NOT_IN_A_HEADER.sub(" ", value).strip()


def _header(name: str, value: str) -> bytes:
    value = header_text(value)
    if value.isascii() and len(name) + len(value) + 2 <= 78:
        return f"{name}: {value}\r\n".encode("ascii")
    charset = "us-ascii" if value.isascii() else "utf-8"
    folded = Header(value, charset, header_name=name).encode(linesep="\r\n")
    return f"{name}: {folded}\r\n".encode("ascii")


def _address(name: str, address: str) -> str:
    display = header_text(name)
    return formataddr((display, address), charset="utf-8") if display else address


def _part(content_type: str, body: str, *, eight_bit: bool) -> bytes:
    lines = _LINE_BREAKS.split(body)
    data = "\r\n".join(lines).encode("utf-8")
    fits = all(len(line.encode("utf-8")) <= MAX_LINE for line in lines)
    if data.isascii() and fits:
        encoding = "7bit"
    elif eight_bit and fits:
        encoding = "8bit"
    else:
        encoding = "quoted-printable"
        lf = "\n".join(lines).encode("utf-8")
        data = binascii.b2a_qp(lf, istext=True, header=False).replace(b"\n", b"\r\n")
    head = (
        f'Content-Type: {content_type}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {encoding}\r\n\r\n"
    ).encode("ascii")
    return head + data + b"\r\n"


def encode(email: OutgoingEmail, *, eight_bit: bool) -> bytes:
    """The message as DATA lines (CRLF, dot-stuffed): 8-bit text parts where the relay takes
    them (8BITMIME), else quoted-printable (7-bit)."""
    sender_name, sender_address = parseaddr(header_text(email.sender))
    parts = [_part("text/plain", email.text, eight_bit=eight_bit)]
    if email.html:
        parts.append(_part("text/html", email.html, eight_bit=eight_bit))
    headers = b"".join(
        [
            _header("From", _address(sender_name, sender_address)),
            _header("To", _address(email.to_name, email.to_address)),
            _header("Subject", email.subject),
            _header("Date", formatdate(localtime=False)),
            _header("Message-ID", email.message_id),
            *(_header(name, value) for name, value in email.headers.items()),
            b"MIME-Version: 1.0\r\n",
        ]
    )
    if len(parts) == 1:  # plain text only: a single part, its headers the message's own
        return dot_stuffed(headers + parts[0])
    boundary = f"=_herald_{uuid.uuid4().hex}"
    delimiter = f"--{boundary}\r\n".encode("ascii")
    body = b"".join(delimiter + part for part in parts) + f"--{boundary}--\r\n".encode("ascii")
    content_type = f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
    return dot_stuffed(headers + content_type.encode("ascii") + body)


def dot_stuffed(message: bytes) -> bytes:
    """CRLF line endings, leading dots doubled (RFC 5321 4.5.2), ending with CRLF."""
    lines = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
