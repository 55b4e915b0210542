"""Developer tooling: the `make run` launcher, infrastructure checks, SMTP and FCM stand-ins."""
