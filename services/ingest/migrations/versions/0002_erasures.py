"""Customers erased, by digest: events from before an erasure are refused.

Revision ID: ingest_0002
Revises: ingest_0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ingest_0002"
down_revision: str | None = "ingest_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("customer_digest", sa.CHAR(64), primary_key=True),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        schema="ingest",
    )


def downgrade() -> None:
    op.drop_table("erasures", schema="ingest")
