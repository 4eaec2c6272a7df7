"""Each customer row remembers when the last card published for them was computed.

A reader keeps a customer's card as of its last change (outreach's replica, which rules
read), and a card's trailing windows, P(alive), RFM scores and chances of an order move with
time alone: the sweep sends a card again before the last one published is
``TEND_SCORING_CARD_MAX_AGE_HOURS`` old. Rows from before the column have none (null): each
goes out again once the sweep reaches it, after the next write of the row (a refit rewrites
every row), which also brings readers the cards this release computes.

Revision ID: scoring_0016
Revises: scoring_0015
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scoring_0016"
down_revision: str | None = "scoring_0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "customers",
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        schema="scoring",
    )


def downgrade() -> None:
    op.drop_column("customers", "published_at", schema="scoring")
