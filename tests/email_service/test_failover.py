"""Provider failover: SMTP relay first, SendGrid's HTTP API next; breakers and quotas in Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from redis.asyncio import Redis

from devtools.sendgrid_stub import SendGridStubState, create_sendgrid_stub
from devtools.smtp_sink import SmtpSink
from email_service.providers import OutgoingEmail
from email_service.providers.sendgrid import SendGridProvider
from email_service.providers.smtp import SmtpConfig, SmtpProvider
from libs.delivery.breaker import BreakerConfig, BreakerState, CircuitBreaker
from libs.delivery.providers import (
    FailoverChain,
    GuardedProvider,
    OutcomeUnknown,
    PermanentProviderError,
    ProviderUnavailable,
    TransientProviderError,
)
from libs.storage.ratelimit import TokenBucket
from tests.support.proxy import TcpProxy
from tests.support.servers import live_server

BREAKER = BreakerConfig(failure_threshold=2, window_seconds=30, open_seconds=30)


def email(n: int = 0) -> OutgoingEmail:
    return OutgoingEmail(
        sender="Herald <no-reply@herald.local>",
        to_address="ada@example.com",
        to_name="Ada",
        subject=f"Hi {n}",
        text="plain",
        html="<b>html</b>",
        message_id=f"<{uuid.uuid4()}@herald.local>",
        headers={"X-Notification-ID": str(n)},
    )


@pytest.fixture
def sink():
    with SmtpSink() as running:
        yield running


@pytest.fixture
async def sendgrid():
    state = SendGridStubState(api_key="sg-key")
    async with live_server(create_sendgrid_stub(state)) as url, httpx.AsyncClient() as http:
        yield state, SendGridProvider(base_url=url, api_key="sg-key", http=http)


@pytest.fixture
def chain(redis, keys, sink, sendgrid):
    def build(
        smtp_rate: float = 0, max_rate_wait: float = 1.0, breaker=BREAKER, data_timeout=600.0
    ):
        smtp = SmtpProvider(
            SmtpConfig(
                "smtp", sink.host, sink.port, timeout=2, pool_size=4, data_timeout=data_timeout
            )
        )
        limiter = None
        if smtp_rate:
            limiter = TokenBucket(
                redis,
                keys.rate_limit("provider:smtp"),
                rate=smtp_rate,
                capacity=max(1, int(smtp_rate)),
            )
        return FailoverChain(
            [
                GuardedProvider(
                    smtp,
                    CircuitBreaker(redis, keys.breaker("smtp"), "smtp", breaker),
                    limiter,
                    max_rate_wait,
                ),
                GuardedProvider(
                    sendgrid[1],
                    CircuitBreaker(redis, keys.breaker("sendgrid"), "sendgrid", breaker),
                ),
            ]
        )

    return build


async def test_first_provider_sends_when_healthy(chain, sink, sendgrid):
    result = await chain().send(email())
    assert result.provider == "smtp"
    assert len(await sink.wait_for(1)) == 1
    assert sendgrid[0].messages == []


async def test_second_provider_takes_over_when_the_first_is_down(chain, sink, sendgrid):
    sink.stop()
    result = await chain().send(email(7))
    assert result.provider == "sendgrid"
    sent = sendgrid[0].messages[0]
    assert sent["personalizations"][0]["to"] == [{"email": "ada@example.com", "name": "Ada"}]
    assert sent["subject"] == "Hi 7"
    assert {c["type"] for c in sent["content"]} == {"text/plain", "text/html"}
    assert sent["custom_args"]["notification_id"] == "7"


async def test_open_breaker_skips_the_provider_without_calling_it(
    chain, sink, sendgrid, redis, keys
):
    providers = chain()
    sink.stop()
    for i in range(2):
        assert (await providers.send(email(i))).provider == "sendgrid"
    smtp_breaker = CircuitBreaker(redis, keys.breaker("smtp"), "smtp", BREAKER)
    assert await smtp_breaker.state() is BreakerState.OPEN
    sink.start()  # back, but the breaker keeps traffic away until its open time passes
    assert (await providers.send(email(3))).provider == "sendgrid"
    assert sink.handler.mails == []
    health = await providers.health()
    assert health == {
        "order": ["smtp", "sendgrid"],
        "breakers": {"smtp": "open", "sendgrid": "closed"},
    }


async def test_all_providers_failing_is_transient(chain, sink, sendgrid):
    sink.stop()
    sendgrid[0].mode = "unavailable"
    with pytest.raises(TransientProviderError) as error:
        await chain().send(email())
    assert not isinstance(error.value, ProviderUnavailable)  # providers were called: an attempt
    text = str(error.value)  # what the DLQ and the console show: each provider named once
    assert text.startswith("smtp: "), text
    assert "; sendgrid: 503" in text, text
    assert text.count("smtp:") == 1, text
    assert text.count("sendgrid:") == 1, text


async def test_all_breakers_open_parks_without_calling_anyone(chain, sink, sendgrid):
    providers = chain()
    sink.stop()
    sendgrid[0].mode = "unavailable"
    for _ in range(2):
        with pytest.raises(TransientProviderError):
            await providers.send(email())
    calls_before = sendgrid[0].requests
    with pytest.raises(ProviderUnavailable) as error:
        await providers.send(email())
    assert error.value.code == "breaker_open"
    assert 0 < error.value.retry_after_ms <= 30_000
    assert sendgrid[0].requests == calls_before


async def test_permanent_refusal_does_not_fail_over(chain, sink, sendgrid):
    sink.handler.mode = "reject"
    with pytest.raises(PermanentProviderError):
        await chain().send(email())
    assert sendgrid[0].messages == []


async def test_send_quota_is_shared_by_replicas(chain, sink):
    """14 mails/s for the provider, whatever the number of consumers sending through it."""
    replicas = [chain(smtp_rate=14, max_rate_wait=30) for _ in range(3)]
    started = time.monotonic()
    results = await asyncio.gather(*(replicas[i % 3].send(email(i)) for i in range(56)))
    elapsed = time.monotonic() - started
    assert {r.provider for r in results} == {"smtp"}
    # a full bucket (14) goes at once, the other 42 at 14/s: about 3 seconds
    assert elapsed >= 2.7
    arrivals = sorted(m.received_at for m in await sink.wait_for(56))
    # after the first bucket (14) the other 42 go at 14/s: 3 seconds apart (unshared buckets: all
    # 56 within about a third of a second). Arrivals are stamped by the sink in this test's own
    # event loop, so a busy machine can delay a stamp; delays only shorten this span by the
    # fifteenth mail's lateness, never lengthen a bunch into a spread
    assert arrivals[-1] - arrivals[14] >= 2.4
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    # bucket capacity plus one second of refill (unshared buckets: 42 + 42); the slack is for the
    # stamps above: a loop held up for half a second bunches about 7 sends into the next window
    assert busiest <= 14 + 14 + 7


async def test_quota_exhausted_moves_on_to_the_next_provider(chain, sink, sendgrid):
    providers = chain(smtp_rate=1, max_rate_wait=0.05)
    first = await providers.send(email(1))
    second = await providers.send(email(2))
    assert first.provider == "smtp"
    assert second.provider == "sendgrid"


@pytest.mark.parametrize(("mode", "status"), [("rate_limited", 429), ("unavailable", 503)])
async def test_sendgrid_overload_is_transient_with_retry_after(sendgrid, mode, status):
    state, provider = sendgrid
    state.mode, state.retry_after = mode, 4
    with pytest.raises(TransientProviderError) as error:
        await provider.send(email())
    assert error.value.code == f"http_{status}"
    assert error.value.retry_after_ms == 4000


async def test_sendgrid_bad_key_is_transient_and_bad_request_permanent(sendgrid):
    state, provider = sendgrid
    state.api_key = "rotated"
    with pytest.raises(TransientProviderError):
        await provider.send(email())
    state.api_key = "sg-key"
    bad = OutgoingEmail(
        sender="",
        to_address="ada@example.com",
        to_name="",
        subject="s",
        text="t",
        html=None,
        message_id="<m@x>",
    )
    with pytest.raises(PermanentProviderError) as error:
        await provider.send(bad)
    assert error.value.code == "http_400"


async def test_deferred_recipients_do_not_open_the_breaker(chain, sink, sendgrid, redis, keys):
    """451 for a recipient is the relay working: fail over, but keep the relay's breaker closed."""
    providers = chain()
    sink.handler.mode = "tempfail"
    for i in range(4):
        assert (await providers.send(email(i))).provider == "sendgrid"
    smtp_breaker = CircuitBreaker(redis, keys.breaker("smtp"), "smtp", BREAKER)
    assert await smtp_breaker.state() is BreakerState.CLOSED


async def test_no_reply_after_the_end_of_data_does_not_fail_over(chain, sink, sendgrid):
    """The relay took the mail and answers late: the outcome is unknown, so nobody sends again."""
    sink.handler.delay_data = 1.5
    with pytest.raises(OutcomeUnknown):
        await chain(data_timeout=0.3).send(email(7))
    assert len(await sink.wait_for(1)) == 1
    assert sendgrid[0].messages == []  # no failover


async def test_sendgrid_answering_too_late_is_an_unknown_outcome():
    # the request was written and no answer came: SendGrid may have queued the mail, so it must
    # not be resent (OutcomeUnknown, never Transient, which would retry or fail over)
    state = SendGridStubState(api_key="sg-key")
    state.mode, state.answer_after = "slow", 3.0
    async with live_server(create_sendgrid_stub(state)) as url, httpx.AsyncClient() as http:
        provider = SendGridProvider(base_url=url, api_key="sg-key", http=http, timeout=0.5)
        with pytest.raises(OutcomeUnknown):
            await provider.send(email(8))
    assert len(state.messages) == 1


async def test_a_breaker_redis_cannot_record_does_not_turn_a_sent_mail_into_an_error(sink, keys):
    """The relay accepted; recording the success in the breaker fails (Redis cut at the point of
    no return): the send still succeeded, and nothing is sent twice."""
    proxy = await TcpProxy("127.0.0.1", 6379).start()
    cut_redis = Redis.from_url(f"redis://127.0.0.1:{proxy.port}/0", socket_timeout=1)
    smtp = SmtpProvider(SmtpConfig("smtp", sink.host, sink.port, timeout=2))
    providers = FailoverChain(
        [GuardedProvider(smtp, CircuitBreaker(cut_redis, keys.breaker("smtp"), "smtp", BREAKER))]
    )
    breaker = providers.providers[0].breaker
    await breaker.record(await breaker.allow(), success=False)  # a success must now reset it

    class CutRedisAtTheEnd:
        async def prepare(self) -> None:
            return None

        async def write(self, provider: str) -> None:
            await proxy.cut()

        async def settle(self) -> None:
            return None

    try:
        result = await providers.send(email(8), CutRedisAtTheEnd())
        assert result.provider == "smtp"
        assert len(await sink.wait_for(1)) == 1
    finally:
        await cut_redis.aclose()
        await proxy.close()
        await smtp.close()
