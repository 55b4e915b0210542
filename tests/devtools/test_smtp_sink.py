"""The SMTP sink as a process (``make run``, the chaos tests, the benchmark) reads only each mail's
headers and keeps nothing in memory: what it records must still be what the mail said."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from tests.support.process_sink import ProcessSink


async def test_the_process_sink_records_each_mail_from_its_headers(tmp_path: Path) -> None:
    sink = ProcessSink(tmp_path).start()
    try:
        sent = []
        for n in range(3):
            message = EmailMessage()
            message["From"] = "Herald <no-reply@herald.local>"
            message["To"] = f"Zoë {n} <zoe{n}@example.com>"
            message["Subject"] = f"Olá, Zoë: the €{n} offer"  # sent RFC 2047-encoded
            message["X-Notification-ID"] = str(uuid.uuid4())
            message.set_content("plain ✓")
            message.add_alternative("<p>rich ✓</p>", subtype="html")
            await aiosmtplib.send(message, hostname=sink.host, port=sink.port)
            sent.append(message)
        recorded = sink.snapshot()
        assert [m.notification_id for m in recorded] == [m["X-Notification-ID"] for m in sent]
        assert [m.subject for m in recorded] == [f"Olá, Zoë: the €{n} offer" for n in range(3)]
        assert [m.to for m in recorded] == [[f"zoe{n}@example.com"] for n in range(3)]
        assert sink.counts() == {m["X-Notification-ID"]: 1 for m in sent}
    finally:
        sink.stop()
