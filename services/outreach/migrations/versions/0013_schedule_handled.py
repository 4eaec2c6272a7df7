"""The schedule index remembers the last occurrence the scheduler handled for each row
(``handled_at``), so a recomputed instant (a card changed, a rule was saved) never moves back
onto it; a row with nothing left to fire keeps that memory with ``due_at`` null.

Revision ID: outreach_0013
Revises: outreach_0012
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "outreach_0013"
down_revision: str | None = "outreach_0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "schedule", sa.Column("handled_at", sa.DateTime(timezone=True)), schema="outreach"
    )
    op.alter_column("schedule", "due_at", nullable=True, schema="outreach")


def downgrade() -> None:
    op.execute("DELETE FROM outreach.schedule WHERE due_at IS NULL")
    op.alter_column("schedule", "due_at", nullable=False, schema="outreach")
    op.drop_column("schedule", "handled_at", schema="outreach")
