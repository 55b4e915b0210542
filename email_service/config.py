"""email_service settings (environment variables, see .env.example)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field

from libs.delivery.runtime import DeliverySettings

EmailProviderName = Literal["smtp", "smtp_backup", "sendgrid"]
DEFAULT_ORDER: tuple[EmailProviderName, ...] = ("smtp",)


class EmailSettings(DeliverySettings):
    service_name: str = "email_service"
    port: int = Field(default=8003, validation_alias=AliasChoices("EMAIL_SERVICE_PORT", "PORT"))

    email_from: str = "Herald <no-reply@herald.local>"
    # Failover order: the first provider that can take a message sends it.
    email_providers: list[EmailProviderName] = Field(default_factory=lambda: list(DEFAULT_ORDER))

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    smtp_use_tls: bool = False
    smtp_start_tls: bool = False
    smtp_timeout_seconds: float = 10.0
    # How long a relay may take to answer the end of data (RFC 5321: 10 minutes). No answer in
    # time is an unknown outcome: the notification is "unconfirmed" and never sent again.
    smtp_data_timeout_seconds: float = 600.0
    smtp_pool_size: int = 10
    smtp_rate_per_second: float = 0  # 0: no quota

    smtp_backup_host: str | None = None
    smtp_backup_port: int = 25
    smtp_backup_username: str | None = None
    smtp_backup_password: str | None = Field(default=None, repr=False)
    smtp_backup_use_tls: bool = False
    smtp_backup_start_tls: bool = False
    smtp_backup_rate_per_second: float = 0

    sendgrid_base_url: str = "https://api.sendgrid.com"
    sendgrid_api_key: str | None = Field(default=None, repr=False)
    sendgrid_rate_per_second: float = 0
    sendgrid_timeout_seconds: float = 10.0
