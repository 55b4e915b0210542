"""Settings of dlq_service (environment variables; see ``.env.example``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, field_validator

from libs.messaging.outcomes import RETRIES_EXHAUSTED
from libs.notification.message import Channel
from libs.settings import MessagingSettings

# Reasons a failed message can heal from by itself once its provider is back: the automatic
# re-drive takes no other (a permanent refusal or an invalid message would only fail again).
# The broker's own dead-lettering (a message expired or over a length limit) is not the message's
# fault either.
HEALABLE_REASONS = frozenset({RETRIES_EXHAUSTED, "broker_expired", "broker_maxlen"})

# push_service has one provider; its breaker is named after it (push_service/providers/fcm.py).
PUSH_PROVIDERS = ("fcm",)


class DlqSettings(MessagingSettings):
    service_name: str = "dlq_service"
    port: int = Field(8005, validation_alias=AliasChoices("DLQ_SERVICE_PORT", "PORT"))
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/herald_dlq",
        validation_alias=AliasChoices("DLQ_DATABASE_URL", "DATABASE_URL"),
    )

    # Bulk republish pace, shared by every request this process serves.
    republish_rate_per_second: float = Field(50.0, gt=0)
    # Failed messages older than this are archived (kept, moved out of the default views).
    retention_days: int = Field(30, ge=1)
    # How often archival runs and the pending gauge is refreshed.
    maintenance_interval_seconds: float = Field(60.0, gt=0)

    # The email providers in failover order (the variable email_service reads): the console shows
    # their breakers, and the automatic re-drive waits while any of them is not closed.
    email_providers: list[str] = Field(default_factory=lambda: ["smtp"])

    # The operator console (the page at /): signs its session cookies; sessions last this long.
    console_secret_key: str = Field(default="change-me", repr=False)
    console_session_seconds: int = Field(8 * 3600, ge=60)
    # Mark the session cookie Secure (HTTPS only). Unset: Secure when ENVIRONMENT=production.
    console_cookie_secure: bool | None = None

    # Automatic re-drive (off by default): every interval, republish pending messages whose reason
    # can heal, while every provider breaker of their channel is closed, at most this many times
    # per notification, a batch at a time.
    auto_redrive_enabled: bool = False
    auto_redrive_interval_seconds: float = Field(300.0, gt=0)
    auto_redrive_max_per_message: int = Field(3, ge=1)
    auto_redrive_reasons: list[str] = Field(default_factory=lambda: [RETRIES_EXHAUSTED])
    auto_redrive_batch: int = Field(100, ge=1, le=1000)

    @field_validator("auto_redrive_reasons")
    @classmethod
    def _only_reasons_that_heal(cls, reasons: list[str]) -> list[str]:
        unknown = sorted(set(reasons) - HEALABLE_REASONS)
        if unknown:
            raise ValueError(
                f"{unknown} cannot heal by themselves; choose from {sorted(HEALABLE_REASONS)}"
            )
        return reasons

    def secret_fields(self) -> tuple[str, ...]:
        return (*super().secret_fields(), "console_secret_key")

    @property
    def session_cookie_secure(self) -> bool:
        if self.console_cookie_secure is None:
            return self.environment == "production"
        return self.console_cookie_secure

    def providers(self) -> dict[Channel, tuple[str, ...]]:
        """Each channel's providers (their breakers carry these names)."""
        return {Channel.EMAIL: tuple(self.email_providers), Channel.PUSH: PUSH_PROVIDERS}


MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
