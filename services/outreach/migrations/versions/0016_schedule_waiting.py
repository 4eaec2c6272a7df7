"""A schedule row remembers since when its rule's daily limit has passed the customer over
(``waiting_since``: they wait in line for a day with a slot, the most valuable first), where
the scheduler used to record a ``daily_limit`` suppression for them every day. The partial
index counts a rule's line.

Revision ID: outreach_0016
Revises: outreach_0015
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "outreach_0016"
down_revision: str | None = "outreach_0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "schedule", sa.Column("waiting_since", sa.DateTime(timezone=True)), schema="outreach"
    )
    op.create_index(
        "ix_schedule_waiting",
        "schedule",
        ["rule_id"],
        schema="outreach",
        postgresql_where=sa.text("waiting_since IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_schedule_waiting", table_name="schedule", schema="outreach")
    op.drop_column("schedule", "waiting_since", schema="outreach")
