"""The SMTP provider against a real SMTP server (aiosmtpd sink): pooling and error classes."""

from __future__ import annotations

import asyncio
import uuid
from email import message_from_bytes
from email import policy as email_policy

import pytest

from devtools.smtp_sink import SmtpSink
from email_service.providers import OutgoingEmail
from email_service.providers.smtp import SmtpConfig, SmtpProvider
from libs.delivery.providers import OutcomeUnknown, PermanentProviderError, TransientProviderError


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


class SlowCommit(RecordingCommit):
    """A commit mark that takes longer than TCP_CORK's 200 ms ceiling (a slow Redis): the kernel
    sends the corked end-of-data line anyway and the relay answers while the mark is written."""

    async def write(self, provider: str) -> None:
        await asyncio.sleep(0.6)
        self.mails_at_write = len(self.sink.handler.mails)
        self.provider = provider


async def test_the_relays_reply_is_kept_when_it_arrives_while_the_mark_is_written(sink, provider):
    commit = SlowCommit(sink)
    result = await provider.send(mail(), commit)
    assert result.provider == "smtp"
    assert commit.mails_at_write == 1  # the relay took it during the slow mark, as a relay may
    assert len(await sink.wait_for(1)) == 1


async def test_no_reply_after_the_end_of_data_is_an_unknown_outcome(sink):
    provider = SmtpProvider(
        SmtpConfig(name="smtp", host=sink.host, port=sink.port, timeout=3, data_timeout=0.3)
    )
    sink.handler.delay_data = 1.0  # the relay has the mail and answers after our timeout
    commit = RecordingCommit(sink)
    with pytest.raises(OutcomeUnknown) as error:
        await provider.send(mail(), commit)
    assert "may have accepted" in str(error.value)
    assert commit.settled
    assert len(await sink.wait_for(1)) == 1
    sink.handler.delay_data = 0
    await provider.send(mail(2))  # the dubious connection was dropped, a fresh one works
    assert len(await sink.wait_for(2)) == 2
    await provider.close()


async def _relay_that_stops_reading_after_354(reader, writer):
    """Just enough SMTP to reach DATA, then the relay stops reading (a stuck relay)."""
    writer.write(b"220 relay ready\r\n")
    while line := await reader.readline():
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            writer.write(b"250 relay\r\n")
        elif verb == b"DATA":
            writer.write(b"354 go ahead\r\n")
            await writer.drain()
            await asyncio.sleep(30)
            return
        else:
            writer.write(b"250 ok\r\n")
        await writer.drain()


async def test_a_send_that_fails_after_taking_a_commit_connection_gives_it_back(redis, keys):
    """The mark's connection is taken, then the body never drains to the relay (a timeout before
    the end-of-data line): the connection goes back to the pool all the same."""
    from redis.asyncio import Redis

    from libs.delivery.claims import SendClaims

    server = await asyncio.start_server(_relay_that_stops_reading_after_354, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    marks = Redis.from_url("redis://127.0.0.1:6379/0", max_connections=1)
    provider = SmtpProvider(SmtpConfig(name="smtp", host="127.0.0.1", port=port, timeout=0.5))
    claims = SendClaims(redis, keys, "sender", commit_redis=marks)
    big = OutgoingEmail(
        **{**mail().__dict__, "text": "x" * 32_000_000}
    )  # more than the socket buffers
    try:
        claim = await claims.acquire("email", str(uuid.uuid4()), "email")
        with pytest.raises(TransientProviderError):
            await provider.send(big, claims.commit_mark(claim))
        assert len(marks.connection_pool._in_use_connections) == 0
    finally:
        server.close()
        await provider.close()
        await marks.aclose()


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\r\n"])
async def test_line_breaks_in_a_subject_or_name_are_flattened_not_fatal(sink, provider, separator):
    email = OutgoingEmail(
        **{
            **mail().__dict__,
            "subject": f"Your order{separator}has shipped",
            "to_name": f"Ada{separator}Lovelace",
        }
    )
    await provider.send(email)
    [received] = await sink.wait_for(1)
    assert received.subject == "Your order has shipped"
    assert received.headers["To"] == "Ada Lovelace <ada@example.com>"


async def test_an_8bit_body_is_declared_with_body_8bitmime(sink, provider):
    await provider.send(mail(1))  # plain ASCII: nothing to declare
    email = OutgoingEmail(**{**mail(2).__dict__, "text": "Olá, até já — ünïcødé", "html": None})
    await provider.send(email)
    ascii_mail, accented = await sink.wait_for(2)
    assert ascii_mail.mail_options == ()
    assert accented.eight_bit
    assert "BODY=8BITMIME" in accented.mail_options
    assert accented.text.strip() == "Olá, até já — ünïcødé"


async def _relay_without_8bitmime(reader, writer, received: list[bytes]):
    """A relay that does not offer 8BITMIME: everything it is given must be 7-bit."""
    writer.write(b"220 relay ready\r\n")
    data: list[bytes] = []
    in_data = False
    while line := await reader.readline():
        if in_data:
            if line == b".\r\n":
                received.append(b"".join(data))
                in_data = False
                writer.write(b"250 queued\r\n")
            else:
                data.append(line)
        elif line[:4].upper() in (b"EHLO", b"HELO"):
            writer.write(b"250-relay\r\n250 SIZE 1000000\r\n")
        elif line[:4].upper() == b"DATA":
            in_data = True
            writer.write(b"354 go ahead\r\n")
        elif line[:4].upper() == b"MAIL":
            received.append(line)
            writer.write(b"250 ok\r\n")
        elif line[:4].upper() == b"QUIT":
            writer.write(b"221 bye\r\n")
            break
        else:
            writer.write(b"250 ok\r\n")
        await writer.drain()
    writer.close()


async def test_an_8bit_body_is_sent_7bit_to_a_relay_without_8bitmime():
    received: list[bytes] = []
    server = await asyncio.start_server(
        lambda r, w: _relay_without_8bitmime(r, w, received), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    provider = SmtpProvider(SmtpConfig(name="smtp", host="127.0.0.1", port=port, timeout=2))
    try:
        email = OutgoingEmail(**{**mail().__dict__, "text": "Olá — até já", "html": None})
        await provider.send(email)
        mail_from, data = received
        assert b"BODY=8BITMIME" not in mail_from
        assert data.isascii()
        decoded = message_from_bytes(data, policy=email_policy.default)
        assert decoded.get_content().strip() == "Olá — até já"
    finally:
        await provider.close()
        server.close()
