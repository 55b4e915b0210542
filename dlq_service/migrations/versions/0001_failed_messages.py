"""failed_messages and failed_message_events

Revision ID: 0001
Revises:
Create Date: 2025-11-23
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
        "failed_messages",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("message_id", sa.Text()),
        sa.Column("notification_id", postgresql.UUID(as_uuid=True)),
        sa.Column("request_id", sa.Text()),
        sa.Column("channel", sa.String(16)),
        sa.Column("user_id", sa.Text()),
        sa.Column("template_code", sa.Text()),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("error_class", sa.Text()),
        sa.Column("service", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("headers", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("body_encoding", sa.String(8), nullable=False),
        sa.Column("correlation_id", sa.Text()),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("republishable", sa.Boolean(), nullable=False),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("republish_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_republished_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("fingerprint", name="uq_failed_messages_fingerprint"),
        sa.CheckConstraint(
            "state IN ('pending', 'republished', 'discarded', 'archived')",
            name="ck_failed_messages_state",
        ),
    )
    op.create_index("ix_failed_messages_state_failed_at", "failed_messages", ["state", "failed_at"])
    op.create_index("ix_failed_messages_channel", "failed_messages", ["channel"])
    op.create_index("ix_failed_messages_reason", "failed_messages", ["reason"])
    op.create_index("ix_failed_messages_notification_id", "failed_messages", ["notification_id"])

    op.create_table(
        "failed_message_events",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column(
            "failed_message_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("failed_messages.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_failed_message_events_failed_message_id",
        "failed_message_events",
        ["failed_message_id", "at"],
    )


def downgrade() -> None:
    op.drop_table("failed_message_events")
    op.drop_table("failed_messages")
