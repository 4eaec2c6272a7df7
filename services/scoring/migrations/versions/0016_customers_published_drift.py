"""Each customer row remembers what the last card published for them said of the figures
time moves (as one number, the card's drift).

A reader keeps a customer's card as of their last change (outreach's replica, which rules
read), and a card's trailing windows, RFM scores, overdue complaints, P(alive), chances of an
order and CLV move with time alone. A refit computes every card: it now sends again each one
whose drift differs from the last one published. Rows from before the column have none
(null): each goes out at the next refit, which also brings readers the cards this release
computes.

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
        "customers", sa.Column("published_drift", sa.BigInteger, nullable=True), schema="scoring"
    )


def downgrade() -> None:
    op.drop_column("customers", "published_drift", schema="scoring")
