"""dlq_service: stores every message that reaches ``failed.queue`` and lets operators act on it.

Failed messages are kept in PostgreSQL with why they failed; admins list, inspect, republish (one,
or many by filter, rate-limited) and discard them over REST, each action recorded in an audit trail.
Records past the retention are archived, never deleted.
"""
