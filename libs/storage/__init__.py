"""Redis and PostgreSQL: connections, every Redis key name, and what is built on them (the
notification status store, token buckets)."""
