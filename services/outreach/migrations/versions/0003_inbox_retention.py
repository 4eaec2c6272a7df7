"""The inbox is pruned by ``received_at``: an index for the hourly prune.

Change ids made from an event id are forgotten after the consumers' retention
(``TEND_EVENT_ID_RETENTION_DAYS`` less a day), as ingest forgets the event id a day later.

Revision ID: outreach_0003
Revises: outreach_0002
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "outreach_0003"
down_revision: str | None = "outreach_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_inbox_received_at", "inbox", ["received_at"], schema="outreach")


def downgrade() -> None:
    op.drop_index("ix_inbox_received_at", "inbox", schema="outreach")
