"""provider column; indexes the console filters and lookups use

Revision ID: 0003
Revises: 0002
Create Date: 2025-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("failed_messages", sa.Column("provider", sa.Text()))
    op.create_index("ix_failed_messages_provider", "failed_messages", ["provider"])
    op.create_index("ix_failed_messages_user_id", "failed_messages", ["user_id"])
    op.create_index("ix_failed_messages_request_id", "failed_messages", ["request_id"])
    op.create_index("ix_failed_messages_received_at", "failed_messages", ["received_at"])
    op.create_index("ix_failed_message_events_actor", "failed_message_events", ["actor"])


def downgrade() -> None:
    op.drop_index("ix_failed_message_events_actor", "failed_message_events")
    op.drop_index("ix_failed_messages_received_at", "failed_messages")
    op.drop_index("ix_failed_messages_request_id", "failed_messages")
    op.drop_index("ix_failed_messages_user_id", "failed_messages")
    op.drop_index("ix_failed_messages_provider", "failed_messages")
    op.drop_column("failed_messages", "provider")
