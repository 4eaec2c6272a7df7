"""The events outbox: facts outreach learned about customers (their own unsubscribe, its
lifting), waiting for the relay to crm.customer-events.v1.

Revision ID: outreach_0004
Revises: outreach_0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "outreach_0004"
down_revision: str | None = "outreach_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "events_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events_outbox")),
        schema="outreach",
    )


def downgrade() -> None:
    op.drop_table("events_outbox", schema="outreach")
