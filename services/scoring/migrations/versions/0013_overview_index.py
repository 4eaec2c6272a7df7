"""The overview's index: customers by lifetime spend, with what the overview counts them by.

``GET /v1/stats/overview`` counts every customer by stage, tier, segment and strategy, sums
the buyers' revenue and ranks the top fifth of buyers by lifetime spend. Both read every
customer: at a million, a scan of the whole table (each row holds the customer's facts) and a
top-N sort of 200,000 spends, ~2.5 s together. From this index alone (an index-only scan,
~60 MB at a million) the top fifth is its first entries, and the counts read a table a tenth
of the size.

Revision ID: scoring_0013
Revises: scoring_0012
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scoring_0013"
down_revision: str | None = "scoring_0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_customers_overview",
        "customers",
        [sa.text("lifetime_spend DESC")],
        schema="scoring",
        postgresql_include=["stage", "tier", "segment", "strategy", "last_order_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_customers_overview", table_name="customers", schema="scoring")
