"""Room in every page of ``idempotency_keys`` for the pending → published update.

Marking a key published changes no indexed column; with free space in the page PostgreSQL
updates the row in place (a HOT update) instead of writing a new version into both indexes.

Revision ID: ingest_0003
Revises: ingest_0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

from alembic import op

revision: str = "ingest_0003"
down_revision: str | None = "ingest_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE ingest.idempotency_keys SET (fillfactor = 70)")


def downgrade() -> None:
    op.execute("ALTER TABLE ingest.idempotency_keys RESET (fillfactor)")
