"""push_service settings (environment variables, see .env.example)."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from libs.delivery.runtime import DeliverySettings


class PushSettings(DeliverySettings):
    service_name: str = "push_service"
    port: int = Field(default=8004, validation_alias=AliasChoices("PUSH_SERVICE_PORT", "PORT"))

    # FCM HTTP v1: <base>/v1/projects/<project>/messages:send, authorised with an
    # OAuth token obtained from the service account's token_uri. Point both at a local
    # FCM-compatible server in development and tests.
    fcm_base_url: str = "https://fcm.googleapis.com"
    fcm_project_id: str | None = None
    fcm_credentials_file: str | None = None
    fcm_credentials_json: str | None = Field(default=None, repr=False)
    fcm_timeout_seconds: float = 10.0
    fcm_rate_per_second: float = 0  # 0: no quota
