"""Rule health: how often a rule raised since it was last saved, its last error, and why it
was disabled when outreach disabled it.

Revision ID: outreach_0005
Revises: outreach_0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "outreach_0005"
down_revision: str | None = "outreach_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "rules",
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        schema="outreach",
    )
    op.add_column("rules", sa.Column("last_error", sa.Text), schema="outreach")
    op.add_column(
        "rules", sa.Column("last_error_at", sa.DateTime(timezone=True)), schema="outreach"
    )
    op.add_column("rules", sa.Column("disabled_reason", sa.Text), schema="outreach")


def downgrade() -> None:
    for column in ("disabled_reason", "last_error_at", "last_error", "failures"):
        op.drop_column("rules", column, schema="outreach")
