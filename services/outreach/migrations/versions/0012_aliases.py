"""Merged customers: the alias map (each merged id and the survivor it now is), and the id an
action was decided for when a merge moved it to its survivor.

Revision ID: outreach_0012
Revises: outreach_0011
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "outreach_0012"
down_revision: str | None = "outreach_0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "aliases",
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("survivor_id", sa.String(128), nullable=False),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("change_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_aliases")),
        schema="outreach",
    )
    op.create_index("ix_aliases_survivor", "aliases", ["survivor_id"], schema="outreach")
    op.add_column("actions", sa.Column("merged_from", sa.String(128)), schema="outreach")


def downgrade() -> None:
    op.drop_column("actions", "merged_from", schema="outreach")
    op.drop_table("aliases", schema="outreach")
