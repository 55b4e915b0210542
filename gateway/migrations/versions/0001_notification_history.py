"""notifications, notification_events, withdrawn_notifications: the durable notification log

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("notification_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("request_id", sa.Text(), nullable=False),
        sa.Column("owner", sa.Text()),
        sa.Column("notification_type", sa.String(16), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("template_code", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("language", sa.Text()),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("provider", sa.Text()),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    # the list's filters, each newest first (the list is ordered by created_at, then id)
    op.create_index(
        "ix_notifications_created", "notifications", [sa.text("created_at DESC"), "notification_id"]
    )
    for column in ("user_id", "notification_type", "status", "owner"):
        op.create_index(
            f"ix_notifications_{column}_created",
            "notifications",
            [column, sa.text("created_at DESC")],
        )
    op.create_index("ix_notifications_owner_request", "notifications", ["owner", "request_id"])

    op.create_table(
        "notification_events",
        sa.Column("stream_id", sa.Text(), primary_key=True),
        sa.Column("notification_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", postgresql.JSONB(), nullable=False),
    )
    op.create_index(
        "ix_notification_events_notification", "notification_events", ["notification_id", "version"]
    )

    op.create_table(
        "withdrawn_notifications",
        sa.Column("notification_id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("withdrawn_notifications")
    op.drop_table("notification_events")
    op.drop_table("notifications")
