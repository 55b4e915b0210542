"""The SMTP provider against a real SMTP server (aiosmtpd sink): pooling and error classes."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from devtools.smtp_sink import SmtpSink
from email_service.providers import OutgoingEmail
from email_service.providers.smtp import SmtpConfig, SmtpProvider
from libs.providers import PermanentProviderError, TransientProviderError


def mail(n: int = 0) -> OutgoingEmail:
    return OutgoingEmail(
        sender="Herald <no-reply@herald.local>",
        to_address="ada@example.com",
        to_name="Ada",
        subject=f"Hello {n}",
        text="plain",
        html="<p>html</p>",
        message_id=f"<{uuid.uuid4()}@herald.local>",
        headers={"X-Notification-ID": str(uuid.uuid4())},
    )


@pytest.fixture
def sink():
    with SmtpSink() as running:
        yield running


@pytest.fixture
async def provider(sink):
    smtp = SmtpProvider(
        SmtpConfig(name="smtp", host=sink.host, port=sink.port, pool_size=4, timeout=3)
    )
    yield smtp
    await smtp.close()


async def test_sends_and_reuses_pooled_connections(sink, provider):
    results = await asyncio.gather(*(provider.send(mail(i)) for i in range(40)))
    assert {r.provider for r in results} == {"smtp"}
    received = await sink.wait_for(40)
    assert len(received) == 40
    assert {m.subject for m in received} == {f"Hello {i}" for i in range(40)}
    assert received[0].text.strip() == "plain"
    assert received[0].html.strip() == "<p>html</p>"
    assert received[0].headers["To"] == "Ada <ada@example.com>"
    assert provider.idle_connections <= 4


async def test_recipient_refused_with_5xx_is_permanent(sink, provider):
    sink.handler.mode = "reject"
    with pytest.raises(PermanentProviderError) as error:
        await provider.send(mail())
    assert error.value.code == "recipient_refused"
    assert "550" in str(error.value)


async def test_4xx_is_transient(sink, provider):
    sink.handler.mode = "tempfail"
    with pytest.raises(TransientProviderError) as error:
        await provider.send(mail())
    assert "451" in str(error.value)


async def test_server_down_is_transient_and_recovers(sink, provider):
    await provider.send(mail())
    sink.stop()
    with pytest.raises(TransientProviderError) as error:
        await provider.send(mail())
    assert error.value.code == "connection_error"
    sink.start()
    result = await provider.send(mail())
    assert result.provider == "smtp"
    assert len(await sink.wait_for(2)) == 2
