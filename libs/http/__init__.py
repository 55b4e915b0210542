"""The HTTP side every service shares: response envelope, errors, middleware, auth, app factory,
lifespan helpers and the process entry point."""
