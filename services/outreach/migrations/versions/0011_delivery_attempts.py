"""Every delivery attempt of every action: when, how it ended, the receiver's HTTP status or
the error, and how long it took, written by delivery with the action's own update; deleted
with the customer's actions' content on erasure.

Revision ID: outreach_0011
Revises: outreach_0008
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "outreach_0011"
down_revision: str | None = "outreach_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_attempts",
        sa.Column("action_id", sa.String(36), nullable=False),
        sa.Column("attempt", sa.SmallInteger, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32)),
        sa.Column("http_status", sa.SmallInteger),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("action_id", "attempt", name=op.f("pk_delivery_attempts")),
        schema="outreach",
    )


def downgrade() -> None:
    op.drop_table("delivery_attempts", schema="outreach")
