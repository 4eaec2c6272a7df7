"""Indexes for the customer list's sort orders.

Revision ID: scoring_0002
Revises: scoring_0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "scoring_0002"
down_revision: str | None = "scoring_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SORTS = ("value_score", "clv", "p_alive", "last_order_at")


def upgrade() -> None:
    for column in SORTS:
        op.create_index(
            f"ix_customers_{column}", "customers", [column, "customer_id"], schema="scoring"
        )


def downgrade() -> None:
    for column in SORTS:
        op.drop_index(f"ix_customers_{column}", table_name="customers", schema="scoring")
