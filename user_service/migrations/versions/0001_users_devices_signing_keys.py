"""Users, their push tokens (devices) and the JWT signing keys.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("language", sa.String(35), nullable=False, server_default="en"),
        sa.Column("email_enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("push_enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.CheckConstraint("role IN ('admin', 'service', 'user')", name="ck_users_role"),
        sa.CheckConstraint("email = lower(email)", name="ck_users_email_lower_case"),
    )
    op.create_index("ix_users_role", "users", ["role"])
    op.create_index("ix_users_created_at", "users", ["created_at", "id"])

    op.create_table(
        "push_tokens",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "user_id",
            sa.Uuid(),
            sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_push_tokens_user_id"),
            nullable=False,
        ),
        sa.Column("token", sa.String(1024), nullable=False),
        sa.Column("platform", sa.String(16), nullable=True),
        sa.Column("device_name", sa.String(200), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.Column("last_seen_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.Column("pruned_at", TIMESTAMP, nullable=True),
        sa.Column("pruned_reason", sa.String(200), nullable=True),
        sa.UniqueConstraint("token", name="uq_push_tokens_token"),
        sa.CheckConstraint(
            "platform IS NULL OR platform IN ('android', 'ios', 'web')",
            name="ck_push_tokens_platform",
        ),
    )
    op.create_index("ix_push_tokens_user_id", "push_tokens", ["user_id"])

    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(64), primary_key=True),
        # NULL once the key stops signing: a replaced key only verifies.
        sa.Column("private_key_pem", sa.Text(), nullable=True),
        sa.Column("public_jwk", postgresql.JSONB(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False, server_default=sa.func.now()),
        sa.Column("activated_at", TIMESTAMP, nullable=True),
        sa.Column("retired_at", TIMESTAMP, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("signing_keys")
    op.drop_index("ix_push_tokens_user_id", table_name="push_tokens")
    op.drop_table("push_tokens")
    op.drop_index("ix_users_created_at", table_name="users")
    op.drop_index("ix_users_role", table_name="users")
    op.drop_table("users")
