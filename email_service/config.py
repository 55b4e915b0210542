"""email_service settings (environment variables, see .env.example)."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from libs.delivery_runtime import DeliverySettings


class EmailSettings(DeliverySettings):
    service_name: str = "email_service"
    port: int = Field(default=8003, validation_alias=AliasChoices("EMAIL_SERVICE_PORT", "PORT"))

    email_from: str = "Herald <no-reply@herald.local>"

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    smtp_use_tls: bool = False
    smtp_start_tls: bool = False
    smtp_timeout_seconds: float = 10.0
    smtp_pool_size: int = 10
