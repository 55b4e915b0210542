"""user_service: users, devices (push tokens), channel preferences, login and token issuing."""
