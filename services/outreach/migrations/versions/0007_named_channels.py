"""Named channels and team alerts: an action remembers the channel its rule named (null: its
kind's current channel, as every action decided before this revision) and whom it is for
(`customer`, or `team`: an alert to the shop's people, never a contact with the customer).

Revision ID: outreach_0007
Revises: outreach_0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "outreach_0007"
down_revision: str | None = "outreach_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("actions", sa.Column("channel_id", sa.String(64)), schema="outreach")
    op.add_column(
        "actions",
        sa.Column("audience", sa.String(8), nullable=False, server_default="customer"),
        schema="outreach",
    )


def downgrade() -> None:
    op.drop_column("actions", "audience", schema="outreach")
    op.drop_column("actions", "channel_id", schema="outreach")
