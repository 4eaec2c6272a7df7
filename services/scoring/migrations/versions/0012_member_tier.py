"""Membership tiers: the tier on each customer's last published card, in a column of its own,
so the next card that carries another one publishes the move (an upgrade or a downgrade).

Rows already stored take the ``member_tier`` their backend set (the winning register of their
stored facts, ``[at, event_id, value]``); computed tiers appear with each customer's next card.

Revision ID: scoring_0012
Revises: scoring_0008
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scoring_0012"
down_revision: str | None = "scoring_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL_SQL = """
UPDATE scoring.customers
SET member_tier = left(state #>> '{profile,member_tier,2}', 64)
WHERE json_typeof(state #> '{profile,member_tier,2}') = 'string'
"""


def upgrade() -> None:
    op.add_column(
        "customers", sa.Column("member_tier", sa.String(64), nullable=True), schema="scoring"
    )
    op.execute(BACKFILL_SQL)


def downgrade() -> None:
    op.drop_column("customers", "member_tier", schema="scoring")
