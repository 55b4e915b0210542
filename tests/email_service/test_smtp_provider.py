"""The SMTP provider against a real SMTP server (aiosmtpd sink): pooling and error classes."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from devtools.smtp_sink import SmtpSink
from email_service.providers import OutgoingEmail
from email_service.providers.smtp import SmtpConfig, SmtpProvider
from libs.delivery.providers import PermanentProviderError, TransientProviderError


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


class RecordingCommit:
    """A commit hook that notes what the relay had received when the mark was written."""

    def __init__(self, sink):
        self.sink = sink
        self.mails_at_write: int | None = None
        self.provider: str | None = None
        self.prepared = False
        self.settled = False

    async def prepare(self) -> None:
        self.prepared = True

    async def write(self, provider: str) -> None:
        await asyncio.sleep(0.1)  # time for the relay to (wrongly) have the mail (< cork ceiling)
        self.mails_at_write = len(self.sink.handler.mails)
        self.provider = provider

    async def settle(self) -> None:
        self.settled = True


async def test_end_of_data_is_held_back_until_the_commit_mark_is_written(sink, provider):
    commit = RecordingCommit(sink)
    await provider.send(mail(), commit)
    # the end-of-data line was already queued, but corked: the relay had not accepted anything
    assert commit.mails_at_write == 0
    assert commit.provider == "smtp"
    assert commit.settled
    assert len(await sink.wait_for(1)) == 1


async def test_lines_starting_with_a_dot_survive_dot_stuffing(sink, provider):
    email = OutgoingEmail(
        sender="Herald <no-reply@herald.local>",
        to_address="ada@example.com",
        to_name="Ada",
        subject="dots",
        text=".hidden\n..two\nend.",
        html=None,
        message_id="<d@herald.local>",
    )
    await provider.send(email)
    [received] = await sink.wait_for(1)
    assert received.text.splitlines()[:3] == [".hidden", "..two", "end."]


async def test_refusal_after_end_of_data_is_reported_and_commit_settled(sink, provider):
    sink.handler.mode = "reject"
    commit = RecordingCommit(sink)
    with pytest.raises(PermanentProviderError):
        await provider.send(mail(), commit)
    assert commit.mails_at_write is None  # refused at RCPT: the mark was never written


async def test_a_commit_mark_redis_cannot_take_does_not_stop_or_spoil_the_send(
    sink, provider, redis, keys
):
    from redis.asyncio import Redis

    from libs.delivery.claims import SendClaims
    from tests.support.servers import free_port

    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    claims = SendClaims(redis, keys, "marker", commit_redis=unreachable)
    claim = await claims.acquire("email", str(uuid.uuid4()), "email")
    result = await provider.send(mail(1), claims.commit_mark(claim))
    assert result.provider == "smtp"
    assert claim.committing is None  # no mark: this send simply has no crash protection
    await provider.send(mail(2))  # the pooled connection is still in a clean state
    received = await sink.wait_for(2)
    assert [m.subject for m in received] == ["Hello 1", "Hello 2"]
    await unreachable.aclose()
