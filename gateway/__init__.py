"""gateway: the public REST entry: auth, validation, rate limits, idempotency, publish, status."""
