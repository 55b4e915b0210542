"""Settings of dlq_service (environment variables; see ``.env.example``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from libs.settings import MessagingSettings


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


MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
