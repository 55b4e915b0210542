"""Prometheus metrics shared by every service (one registry per process).

Metrics are module-level singletons so that building several apps in one process (tests) does not
register them twice. Services add their own metrics in their own modules.
"""

from __future__ import annotations

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
BREAKER_STATE = Gauge(
    "circuit_breaker_open", "1 while the provider's circuit breaker is open", ["provider"]
)
