"""Proof of what acting achieved: each action records the arm of its experiment, the card's
tier and strategy and the model's forecast for its goal when it was decided, and the goal it
is measured against; ``goal_events`` keeps the events a goal can be reached by (orders with
their value, visits, complaint updates...), so attribution is a pure function of those events
and the ledger.

Revision ID: outreach_0008
Revises: outreach_0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "outreach_0008"
down_revision: str | None = "outreach_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for column in (
        sa.Column("arm", sa.String(16)),
        sa.Column("tier", sa.String(16)),
        sa.Column("strategy", sa.String(16)),
        sa.Column("baseline", sa.Float),
        sa.Column("goal", JSONB),
    ):
        op.add_column("actions", column, schema="outreach")
    op.create_table(
        "goal_events",
        sa.Column("event_id", sa.String(128), primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revenue", sa.Numeric(18, 4)),
        sa.Column("data", JSONB, nullable=False),
        schema="outreach",
    )
    op.create_index(
        "ix_goal_events_customer",
        "goal_events",
        ["customer_id", "occurred_at"],
        schema="outreach",
    )


def downgrade() -> None:
    op.drop_table("goal_events", schema="outreach")
    for name in ("goal", "baseline", "strategy", "tier", "arm"):
        op.drop_column("actions", name, schema="outreach")
