"""failed_messages.state may be 'republishing' (claimed before the publish)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint("ck_failed_messages_state", "failed_messages", type_="check")
    op.create_check_constraint(
        "ck_failed_messages_state",
        "failed_messages",
        "state IN ('pending', 'republishing', 'republished', 'discarded', 'archived')",
    )


def downgrade() -> None:
    op.execute("UPDATE failed_messages SET state = 'pending' WHERE state = 'republishing'")
    op.drop_constraint("ck_failed_messages_state", "failed_messages", type_="check")
    op.create_check_constraint(
        "ck_failed_messages_state",
        "failed_messages",
        "state IN ('pending', 'republished', 'discarded', 'archived')",
    )
