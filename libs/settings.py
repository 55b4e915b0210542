"""Base settings every service reads from the environment (pydantic-settings).

Each service subclasses :class:`ServiceSettings` with its own fields only. Names of environment
variables are the upper-case field names, documented in ``.env.example``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from libs.messaging.policy import RetryPolicy
from libs.messaging.topology import Topology, build_topology
from libs.notification.message import Channel

Environment = Literal["development", "test", "production"]

# Secrets that ship in .env.example and docker-compose.yml for local use only.
DEVELOPMENT_SECRETS = frozenset({"", "change-me", "herald-dev-service-password", "admin12345!"})
MIN_SERVICE_PASSWORD_LENGTH = 20


class ServiceSettings(BaseSettings):
    """Settings shared by every service."""

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", frozen=True, populate_by_name=True
    )

    service_name: str = "herald"
    environment: Environment = "development"
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "console"

    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Every Redis key starts with this, so several deployments (or test runs) share one server.
    redis_key_prefix: str = "herald:"

    user_service_url: str = "http://127.0.0.1:8001"
    template_service_url: str = "http://127.0.0.1:8002"

    # JWT verification (tokens are issued by user_service and verified with its JWKS).
    jwt_issuer: str = "herald-user-service"
    jwt_audience: str = "herald"
    jwks_cache_seconds: int = 300

    # Credentials a service uses to obtain its own `service` token from user_service.
    service_account_email: str = "service@herald.local"
    service_account_password: str = Field(default="herald-dev-service-password", repr=False)

    # /metrics answers only ``Authorization: Bearer <metrics_token>`` when set (required in
    # production: metrics name providers, queues and error rates).
    metrics_token: str | None = Field(default=None, repr=False)

    # Upper bound for request bodies, in bytes (413 above it).
    max_body_bytes: int = 65_536
    http_timeout_seconds: float = 5.0

    @model_validator(mode="before")
    @classmethod
    def _empty_means_unset(cls, data: Any) -> Any:
        """``SMTP_HOST=`` in a .env file means "not configured" for fields that default to None."""
        if isinstance(data, dict):
            for name, value in list(data.items()):
                field = cls.model_fields.get(name)
                if value == "" and field is not None and field.default is None:
                    data[name] = None
        return data

    @model_validator(mode="after")
    def _refuse_development_secrets_in_production(self) -> ServiceSettings:
        if self.environment == "production":
            for name in self.secret_fields():
                if str(getattr(self, name)) in DEVELOPMENT_SECRETS:
                    raise ValueError(f"{name.upper()} must be set to a real secret in production")
            if self.metrics_token is None:
                raise ValueError("METRICS_TOKEN must be set in production")
            # No lockout protects the service account (strangers must not be able to lock our own
            # services out), so its password must be too long to guess.
            if len(self.service_account_password) < MIN_SERVICE_PASSWORD_LENGTH:
                raise ValueError(
                    "SERVICE_ACCOUNT_PASSWORD must be at least "
                    f"{MIN_SERVICE_PASSWORD_LENGTH} characters in production"
                )
        return self

    def secret_fields(self) -> tuple[str, ...]:
        """Fields that must not keep their development default in production."""
        return ("service_account_password", "metrics_token")


class MessagingSettings(ServiceSettings):
    """Settings of every service that declares the topology or consumes from it.

    The retry delays decide which delay queues exist, so every service reads the same variables and
    declares the same topology.
    """

    queue_type: Literal["classic", "quorum"] = "classic"
    # Messages a consumer process holds unacknowledged at once (its work in flight).
    consumer_prefetch: int = Field(default=50, ge=1, le=1000)
    email_retry_delays_ms: list[int] = Field(default_factory=lambda: [1000, 2000, 4000])
    push_retry_delays_ms: list[int] = Field(default_factory=lambda: [1000, 2000, 4000])
    retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    claim_wait_ms: int = 2000
    publish_confirm_timeout_seconds: float = 5.0
    status_retention_seconds: int = 7 * 86400

    def retry_policy(self, channel: Channel) -> RetryPolicy:
        delays = {
            Channel.EMAIL: self.email_retry_delays_ms,
            Channel.PUSH: self.push_retry_delays_ms,
        }[channel]
        return RetryPolicy(
            delays_ms=tuple(delays), jitter=self.retry_jitter, claim_wait_ms=self.claim_wait_ms
        )

    def topology(self) -> Topology:
        return build_topology(
            {c: self.retry_policy(c).queue_delays() for c in Channel},
            queue_type=self.queue_type,
        )
