"""Prometheus metrics shared by every service (one registry per process).

Metrics are module-level singletons so that building several apps in one process (tests) does not
register them twice. Services add their own metrics in their own modules. Dashboards and alert
rules (``deploy/``) use these names; ``tests/deploy/test_observability.py`` fails when a panel or
a rule queries a name that no module exports. What each one means for an operator:
``docs/operations.md``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests handled", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
MESSAGES_CONSUMED = Counter(
    "messages_consumed_total", "Messages taken from a queue, by outcome", ["queue", "outcome"]
)
MESSAGES_PUBLISHED = Counter(
    "messages_published_total", "Messages confirmed by the broker", ["exchange", "routing_key"]
)
PUBLISH_FAILURES = Counter(
    "message_publish_failures_total", "Publishes the broker did not confirm", ["exchange"]
)
MESSAGE_HANDLING = Histogram(
    "message_handling_seconds",
    "Time from taking a message to settling it",
    ["queue"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
NOTIFICATIONS = Counter(
    "notifications_total", "Notifications by channel and final outcome", ["channel", "outcome"]
)
PROVIDER_SENDS = Counter(
    "provider_sends_total", "Provider send attempts by provider and result", ["provider", "result"]
)
PROVIDER_SEND_LATENCY = Histogram(
    "provider_send_duration_seconds",
    "Time a provider took to accept or refuse one send",
    ["provider"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERY_LATENCY = Histogram(
    "notification_delivery_latency_seconds",
    "From acceptance at the gateway (the message's created_at) to delivered, per channel",
    ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)
RETRIES = Counter(
    "message_retries_total",
    "Messages sent to a delay queue with an attempt spent, by work queue and error class",
    ["queue", "reason"],
)
WAITS = Counter(
    "message_waits_total",
    "Messages parked in a delay queue without spending an attempt (breaker open, send claimed "
    "elsewhere, own service unreachable), by work queue and error class",
    ["queue", "reason"],
)
DEAD_LETTERS = Counter(
    "messages_dead_lettered_total",
    "Messages published to failed.queue, by the queue they left and the reason",
    ["queue", "reason"],
)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
BREAKER_STATE = Gauge(
    "circuit_breaker_state",
    "A provider's circuit breaker as the shared state in Redis holds it, read at each scrape: "
    "0 closed, 1 half-open (the open time is over: the next call probes), 2 open",
    ["provider"],
)
QUEUE_MESSAGES = Gauge(
    "queue_messages", "Messages ready in a queue (not yet delivered to a consumer)", ["queue"]
)
QUEUE_CONSUMERS = Gauge("queue_consumers", "Consumers subscribed to a queue", ["queue"])
QUEUE_OLDEST_AGE = Gauge(
    "queue_oldest_message_age_seconds",
    "Age of the oldest ready message in a queue, an upper bound (libs/messaging/queue_stats.py); "
    "0 when the queue is empty, NaN until this process has seen the queue empty or taken from it",
    ["queue"],
)
CLAIM_TAKEOVERS = Counter(
    "send_claim_takeovers_total",
    "Send claims taken over from a holder that died: resent (it had not reached the point of no "
    "return) or assumed_sent (it had)",
    ["channel", "outcome"],
)
HEARTBEAT = Gauge(
    "consumer_last_heartbeat_timestamp_seconds",
    "When this consumer last refreshed its alive key in Redis (its send claims stay its own)",
)


def seconds_since(moment: datetime) -> float:
    """Seconds from ``moment`` until now (a naive ``moment`` is taken as UTC; never negative)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (datetime.now(UTC) - moment).total_seconds())
