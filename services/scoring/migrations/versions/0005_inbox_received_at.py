"""The inbox remembers when ingest received each event, and forgets it after the retention.

An event id is new again once ingest has forgotten it (``TEND_EVENT_ID_RETENTION_DAYS``): the
inbox keeps an id a day less, counted from the event's ``received_at`` (the same clock ingest
counts from, and the same after a rebuild), and is pruned hourly by that column. Rows from
before this revision take their ``applied_at``, which is no earlier.

Revision ID: scoring_0005
Revises: scoring_0004
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scoring_0005"
down_revision: str | None = "scoring_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("inbox", sa.Column("received_at", sa.DateTime(timezone=True)), schema="scoring")
    op.execute("UPDATE scoring.inbox SET received_at = applied_at")
    op.alter_column("inbox", "received_at", nullable=False, schema="scoring")
    op.create_index("ix_inbox_received_at", "inbox", ["received_at"], schema="scoring")


def downgrade() -> None:
    op.drop_index("ix_inbox_received_at", "inbox", schema="scoring")
    op.drop_column("inbox", "received_at", schema="scoring")
