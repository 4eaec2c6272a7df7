"""Each customer row remembers what the last card published for them said of the figures
time moves: its trailing windows, RFM scores and overdue complaints as one number
(``published_drift``), and the model's figures (``published_model``: P(alive), expected
orders, ln(1 + CLV), the chances of an order).

A reader keeps a customer's card as of their last change (outreach's replica, which rules
read), and those figures move with time alone. A refit computes every card: it now sends
again each one whose figures moved from the last one published (the model's by a step).
Rows from before the columns have none (null): each goes out at the next refit, which also
brings readers the cards this release computes.

Revision ID: scoring_0016
Revises: scoring_0015
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "scoring_0016"
down_revision: str | None = "scoring_0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "customers", sa.Column("published_drift", sa.BigInteger, nullable=True), schema="scoring"
    )
    op.add_column(
        "customers",
        sa.Column("published_model", postgresql.JSONB, nullable=True),
        schema="scoring",
    )


def downgrade() -> None:
    op.drop_column("customers", "published_model", schema="scoring")
    op.drop_column("customers", "published_drift", schema="scoring")
