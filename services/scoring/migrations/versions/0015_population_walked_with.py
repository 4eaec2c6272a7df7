"""The population row remembers what the stored stage histories were last walked with.

A refit brings every customer's stored stage moves to their card's walk when the walk may
have changed: a new population rhythm, other lifecycle settings, other code. It used to
read every history on the first refit of each process, since a restart may have changed the
settings; at a million customers that is a tenth of the refit. ``walked_with`` is the
fingerprint of the rhythm, settings and code the last complete walk used (null: none yet),
so a restart that changed none of them walks only the customers whose stage moved.

Revision ID: scoring_0015
Revises: scoring_0014
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scoring_0015"
down_revision: str | None = "scoring_0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "population", sa.Column("walked_with", sa.String(64), nullable=True), schema="scoring"
    )


def downgrade() -> None:
    op.drop_column("population", "walked_with", schema="scoring")
