"""The erasure registry: customers forgotten, by digest, with what the aggregates keep.

Revision ID: scoring_0003
Revises: scoring_0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scoring_0003"
down_revision: str | None = "scoring_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("customer_digest", sa.CHAR(64), primary_key=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("lifetime_spend", sa.Numeric(18, 4), nullable=False),
        sa.Column("orders", sa.Integer, nullable=False),
        schema="scoring",
    )


def downgrade() -> None:
    op.drop_table("erasures", schema="scoring")
