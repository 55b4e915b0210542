"""The delivery decision as a pure function of the recipients' outcomes (and of early errors)."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from libs.clients.errors import UpstreamNotFound, UpstreamRejected, UpstreamUnavailable
from libs.delivery.decision import Busy, Verdict, decide_after_error, decide_after_sends
from libs.delivery.providers import (
    OutcomeUnknown,
    PermanentProviderError,
    ProviderUnavailable,
    RecipientGone,
    SendResult,
    TransientProviderError,
)
from libs.messaging.outcomes import PERMANENT_ERROR, Ack, DeadLetter, Retry

pytestmark = pytest.mark.unit


def test_every_recipient_sent_is_delivered_with_each_provider_named_once():
    outcome = decide_after_sends([SendResult("smtp"), SendResult("fcm"), SendResult("smtp")])
    assert outcome.verdict is Verdict.DELIVERED
    assert outcome.decision == Ack("delivered")
    assert outcome.provider == "fcm,smtp"
    assert (outcome.recipients_sent, outcome.recipients_refused) == (3, 0)


def test_partial_success_with_the_rest_refused_is_delivered_and_counts_the_refused():
    refused = RecipientGone("fcm", "UNREGISTERED", code="unregistered")
    outcome = decide_after_sends([SendResult("fcm"), refused])
    assert outcome.verdict is Verdict.DELIVERED
    assert (outcome.recipients_sent, outcome.recipients_refused) == (1, 1)


def test_busy_claim_waits_without_spending_an_attempt():
    outcome = decide_after_sends([SendResult("smtp"), Busy("dev-2")])
    assert outcome.verdict is Verdict.BUSY
    assert isinstance(outcome.decision, Retry)
    assert outcome.decision.count_attempt is False
    assert outcome.decision.error_class == "SendClaimBusy"
    assert "dev-2" in outcome.decision.error


def test_a_provider_attempt_that_failed_spends_an_attempt_and_honours_the_longest_retry_after():
    slow = TransientProviderError("smtp", "451 try later", retry_after_ms=5_000)
    slower = TransientProviderError("smtp_backup", "421 busy", retry_after_ms=9_000)
    outcome = decide_after_sends([slow, SendResult("smtp"), slower])
    assert outcome.verdict is Verdict.ATTEMPT_FAILED
    assert isinstance(outcome.decision, Retry)
    assert outcome.decision.count_attempt is True
    assert outcome.decision.not_before_ms == 9_000
    assert outcome.provider == "smtp"
    assert outcome.decision.provider == "smtp"  # travels as x-failure-provider to the DLQ
    assert outcome.decision.error_class == "TransientProviderError"


def test_an_attempt_that_failed_outweighs_a_busy_claim():
    failed = TransientProviderError("fcm", "503")
    outcome = decide_after_sends([Busy("dev-1"), failed])
    assert outcome.verdict is Verdict.ATTEMPT_FAILED
    assert isinstance(outcome.decision, Retry)
    assert outcome.decision.count_attempt is True


def test_no_provider_called_waits_for_the_shortest_named_time_without_an_attempt():
    breaker = ProviderUnavailable("smtp", "circuit breaker open", retry_after_ms=20_000)
    quota = ProviderUnavailable("sendgrid", "quota", code="rate_limited", retry_after_ms=2_000)
    outcome = decide_after_sends([breaker, quota])
    assert outcome.verdict is Verdict.WAITING_FOR_PROVIDER
    assert isinstance(outcome.decision, Retry)
    assert outcome.decision.count_attempt is False
    assert outcome.decision.not_before_ms == 2_000
    assert outcome.decision.error_class == "ProviderUnavailable"


def test_a_called_provider_failing_beside_an_unavailable_one_is_an_attempt():
    outcome = decide_after_sends(
        [ProviderUnavailable("smtp", "open"), TransientProviderError("fcm", "timeout")]
    )
    assert outcome.verdict is Verdict.ATTEMPT_FAILED


def test_every_recipient_refused_for_good_is_dead_lettered_with_the_first_error():
    first = PermanentProviderError("smtp", "550 no such user", code="recipient_refused")
    second = PermanentProviderError("smtp", "552 too big", code="message_refused")
    outcome = decide_after_sends([first, second])
    assert outcome.verdict is Verdict.REFUSED
    assert outcome.decision == DeadLetter(
        PERMANENT_ERROR, str(first), "recipient_refused", provider="smtp"
    )


def test_no_outcomes_is_a_programming_error():
    with pytest.raises(ValueError, match="without recipients"):
        decide_after_sends([])


@pytest.mark.parametrize(
    ("error", "verdict", "error_class"),
    [
        (UpstreamNotFound("user_service", "no user", 404), Verdict.NOT_FOUND, "UserNotFound"),
        (
            UpstreamNotFound("template_service", "no template", 404),
            Verdict.NOT_FOUND,
            "TemplateNotFound",
        ),
        (
            UpstreamRejected("template_service", "x", 422, code="missing_variable"),
            Verdict.REFUSED,
            "missing_variable",
        ),
        (UpstreamRejected("user_service", "x", 400), Verdict.REFUSED, "UpstreamRejected"),
    ],
)
def test_unknown_or_refused_references_are_permanent(error, verdict, error_class):
    outcome = decide_after_error(error)
    assert outcome.verdict is verdict
    assert isinstance(outcome.decision, DeadLetter)
    assert outcome.decision.reason == PERMANENT_ERROR
    assert outcome.decision.error_class == error_class


def test_our_own_service_unreachable_waits_without_an_attempt():
    outcome = decide_after_error(UpstreamUnavailable("user_service", "connection refused"))
    assert outcome.verdict is Verdict.WAITING_FOR_DEPENDENCY
    assert isinstance(outcome.decision, Retry)
    assert outcome.decision.count_attempt is False


def test_a_redis_fault_is_a_wait_not_an_attempt():
    outcome = decide_after_error(RedisConnectionError("connection reset"))
    assert outcome.verdict is Verdict.WAITING_FOR_REDIS
    assert isinstance(outcome.decision, Retry)
    assert outcome.decision.error_class == "RedisError"
    assert outcome.decision.count_attempt is False
    assert outcome.decision.not_before_ms >= 1000


def test_no_answer_after_the_point_of_no_return_is_unconfirmed_and_never_resent():
    unknown = OutcomeUnknown("smtp", "no reply after the end of data")
    outcome = decide_after_sends([unknown])
    assert outcome.verdict is Verdict.UNCONFIRMED
    assert outcome.decision == Ack("unconfirmed")  # acked: nothing is sent again
    assert (outcome.provider, outcome.recipients_unknown) == ("smtp", 1)


def test_a_confirmed_recipient_beside_an_unknown_one_is_delivered_and_counts_the_unknown():
    outcome = decide_after_sends([SendResult("fcm"), OutcomeUnknown("fcm", "read timeout")])
    assert outcome.verdict is Verdict.DELIVERED
    assert (outcome.recipients_sent, outcome.recipients_unknown) == (1, 1)


def test_an_unknown_outcome_beside_a_failed_attempt_still_retries_the_failed_one():
    outcome = decide_after_sends([OutcomeUnknown("fcm", "?"), TransientProviderError("fcm", "503")])
    assert outcome.verdict is Verdict.ATTEMPT_FAILED
