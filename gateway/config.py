"""gateway settings (environment variables, see .env.example)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from libs.settings import MessagingSettings


class GatewaySettings(MessagingSettings):
    service_name: str = "gateway"
    port: int = Field(default=8000, validation_alias=AliasChoices("GATEWAY_PORT", "PORT"))

    # uvicorn worker processes sharing the port. On Kubernetes keep 1 and scale pods; on one host
    # (compose, make run) about one per core. Metrics are then summed over the workers.
    workers: int = Field(1, ge=1, le=64, validation_alias=AliasChoices("GATEWAY_WORKERS"))

    # A request_id is remembered this long: the same id and body within it returns the first answer.
    idempotency_ttl_seconds: int = 86400
    # How long a request in flight holds its request_id before another may take over (crash).
    idempotency_pending_seconds: int = 30

    # Token bucket per caller (JWT subject), shared by every gateway replica.
    rate_limit_per_second: float = 500.0
    rate_limit_burst: int = 1000

    # POST /api/v1/notifications/batch: up to 1,000 notifications of up to ~2 KB each.
    batch_max_body_bytes: int = Field(2_097_152, ge=65_536)

    # Refuse notifications for unknown users and templates (422) when their service answers;
    # when it does not, accept and let delivery decide (the notification is never lost).
    verify_references: bool = True

    # The durable notification log (gateway/history.py), in the gateway's own database.
    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/herald_notifications",
        validation_alias=AliasChoices("GATEWAY_DATABASE_URL", "DATABASE_URL"),
    )
    db_pool_size: int = Field(10, ge=1)
    # Move status changes from the Redis outbox into PostgreSQL in this process (every gateway
    # replica shares the work); off only where a separate process does it.
    history_recorder: bool = True
    # After a batch smaller than 500 entries, the recorder waits this long before the next read:
    # fewer, larger transactions under a steady load; the log trails Redis by about this much.
    history_linger_ms: int = Field(250, ge=0, le=5000)
    # Notifications (and their timelines) older than this are purged from the log.
    history_retention_days: int = Field(90, ge=1)


MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
