"""A broadcast's customers its spent daily limit passes over wait in its line, as a schedule,
stage or membership rule's do, instead of being suppressed: ``launches`` keeps each launch
(when it was first launched, by whom, and its content as its cards carried it), and a
schedule row of a broadcast rule names the launch its customer waits for (``launch_id``).

Revision ID: outreach_0017
Revises: outreach_0016
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "outreach_0017"
down_revision: str | None = "outreach_0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "launches",
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("launch_id", sa.String(128), nullable=False),
        sa.Column("content", postgresql.JSONB()),
        sa.Column("launched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(100)),
        sa.PrimaryKeyConstraint("rule_id", "launch_id", name="pk_launches"),
        schema="outreach",
    )
    op.add_column("schedule", sa.Column("launch_id", sa.String(128)), schema="outreach")


def downgrade() -> None:
    op.drop_column("schedule", "launch_id", schema="outreach")
    op.drop_table("launches", schema="outreach")
