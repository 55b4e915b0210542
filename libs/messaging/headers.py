"""AMQP header names (one place per fact)."""

ATTEMPTS = "x-attempts"
"""Delivery attempts that already failed for this message (absent or 0 on the first delivery)."""

WAITS = "x-waits"
"""Times the message was parked without spending an attempt: another consumer held its send claim,
or every provider was unavailable (breaker open, rate limit)."""

FAILURE_REASON = "x-failure-reason"
"""Why the message is in failed.queue: invalid_message, permanent_error, retries_exhausted, ..."""
FAILURE_ERROR = "x-failure-error"
FAILURE_ERROR_CLASS = "x-failure-error-class"
FAILURE_SERVICE = "x-failure-service"
FAILURE_AT = "x-failure-at"
FAILURE_PROVIDER = "x-failure-provider"
"""The provider whose failure this was (absent when no provider was called)."""
ORIGINAL_ROUTING_KEY = "x-original-routing-key"
REPUBLISHED_COUNT = "x-republished"

FAILURE_HEADERS = (
    FAILURE_REASON,
    FAILURE_ERROR,
    FAILURE_ERROR_CLASS,
    FAILURE_SERVICE,
    FAILURE_AT,
    FAILURE_PROVIDER,
    ORIGINAL_ROUTING_KEY,
)
