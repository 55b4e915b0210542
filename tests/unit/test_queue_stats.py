"""The oldest-message age bound (libs/messaging/queue_stats.py): arithmetic, without a broker."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from libs.messaging.queue_stats import QueueStats, enqueue_times

pytestmark = pytest.mark.unit


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_a_published_message_entered_its_queue_at_its_timestamp():
    assert enqueue_times("email.queue", {}, at(100)) == [("email.queue", 100.0)]
    assert enqueue_times("email.queue", {}, None) == []


def test_a_message_back_from_a_delay_queue_tells_both_queues_when_it_entered():
    death = {"queue": "email.delay.1000", "reason": "expired", "time": at(160)}
    times = enqueue_times("email.queue", {"x-death": [death]}, at(159))
    assert times == [("email.queue", 160.0), ("email.delay.1000", 159.0)]


def test_age_is_unknown_until_the_queue_was_seen_empty_or_taken_from():
    stats = QueueStats(["email.queue"])
    assert math.isnan(stats.oldest_age("email.queue", depth=5, now=1000))


def test_age_is_bounded_by_the_last_message_taken_and_the_last_time_seen_empty():
    stats = QueueStats(["email.queue"])
    assert stats.oldest_age("email.queue", depth=0, now=1000) == 0
    assert stats.oldest_age("email.queue", depth=3, now=1015) == 15  # arrived after 1000
    stats.taken("email.queue", {}, at(1010), priority=0)
    assert stats.oldest_age("email.queue", depth=3, now=1016) == 6
    # nothing taken while messages wait: the bound grows with the clock
    assert stats.oldest_age("email.queue", depth=3, now=1100) == 90


def test_high_priority_messages_overtake_and_do_not_move_the_bound():
    stats = QueueStats(["email.queue"])
    stats.taken("email.queue", {}, at(1000), priority=0)
    stats.taken("email.queue", {}, at(1050), priority=9)  # newer, but jumped the queue
    assert stats.oldest_age("email.queue", depth=1, now=1060) == 60


def test_queues_this_process_does_not_watch_are_ignored():
    stats = QueueStats(["email.queue"])
    death = {"queue": "push.delay.1000", "time": at(10)}
    stats.taken("email.queue", {"x-death": [death]}, at(5), priority=0)
    assert stats.oldest_age("email.queue", depth=1, now=20) == 10
