"""The retry policy and the topology are data and arithmetic: checked without a broker."""

from __future__ import annotations

import pytest

from libs.messaging.policy import RetryPolicy
from libs.messaging.topology import build_topology, delay_queue, work_queue
from libs.notification.message import Channel
from libs.settings import MessagingSettings

pytestmark = pytest.mark.unit


def test_each_retry_waits_its_own_delay_within_the_jitter():
    policy = RetryPolicy(delays_ms=(1000, 2000, 4000), jitter=0.2)
    for number, base in ((1, 1000), (2, 2000), (3, 4000)):
        for _ in range(50):
            queue_delay, expiration = policy.delay_for(number)
            assert queue_delay == base
            assert 0.8 * base <= expiration <= 1.2 * base
    assert policy.max_retries == 3


def test_retry_after_picks_the_smallest_delay_queue_long_enough():
    policy = RetryPolicy(delays_ms=(1000, 2000, 4000), jitter=0.0)
    assert policy.delay_for(1, not_before_ms=12_000) == (15_000, 15_000)
    assert policy.delay_for(1, not_before_ms=10**9)[0] == 60_000  # the longest queue there is


def test_parking_without_an_attempt_uses_the_claim_wait_at_least():
    policy = RetryPolicy(delays_ms=(100,), jitter=0.0, claim_wait_ms=2000)
    assert policy.wait_delay() == (2000, 2000)
    assert policy.wait_delay(not_before_ms=20_000) == (30_000, 30_000)


def test_every_delay_a_policy_can_choose_has_a_queue():
    settings = MessagingSettings(email_retry_delays_ms=[300, 600], claim_wait_ms=500)
    names = {q.name for q in settings.topology().queues}
    policy = settings.retry_policy(Channel.EMAIL)
    for delay in policy.queue_delays():
        assert delay_queue(Channel.EMAIL, delay) in names
    assert {work_queue(c) for c in Channel} <= names


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_work_queues_dead_letter_to_the_failed_queue(queue_type):
    topology = build_topology({Channel.EMAIL: (1000,)}, queue_type=queue_type)
    email = topology.queue("email.queue")
    assert email.arguments["x-dead-letter-exchange"] == "notifications.dlx"
    assert email.arguments["x-queue-type"] == queue_type
    retry = topology.queue(delay_queue(Channel.EMAIL, 1000))
    assert retry.arguments["x-dead-letter-exchange"] == "notifications.direct"
    assert retry.arguments["x-dead-letter-routing-key"] == "email"
    # whatever the work queues are, a delay queue hands its messages on at least once
    assert retry.arguments["x-queue-type"] == "quorum"
    assert retry.arguments["x-dead-letter-strategy"] == "at-least-once"
    assert retry.arguments["x-overflow"] == "reject-publish"
    if queue_type == "classic":
        assert email.arguments["x-max-priority"] == 10
    else:
        assert email.arguments["x-dead-letter-strategy"] == "at-least-once"
