"""Idempotency keys kept 400 days, so kept small: a 16-byte payload hash, pages 90% full.

Keys now live as long as the consumers' inboxes remember event ids
(``TEND_EVENT_ID_RETENTION_DAYS``), fifty times the old eight days. The payload hash is stored
as its first 16 bytes instead of 64 hex characters (48 bytes less a row), and pages are filled
to 90% instead of 70%: the pending → published update of a fresh key still finds room in its
page (and dead versions of earlier updates there are pruned in place), while the keys of the
past 400 days no longer carry 30% empty pages.

Revision ID: ingest_0004
Revises: ingest_0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "ingest_0004"
down_revision: str | None = "ingest_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE ingest.idempotency_keys ALTER COLUMN payload_hash TYPE bytea "
        "USING decode(substr(payload_hash, 1, 32), 'hex')"
    )
    op.execute("ALTER TABLE ingest.idempotency_keys SET (fillfactor = 90)")


def downgrade() -> None:
    # Half a hash cannot be made whole again: the keys are forgotten, so a retry publishes
    # again and the consumers' inboxes drop the repeat by event id.
    op.execute("DELETE FROM ingest.idempotency_keys")
    op.execute("ALTER TABLE ingest.idempotency_keys ALTER COLUMN payload_hash TYPE char(64)")
    op.execute("ALTER TABLE ingest.idempotency_keys SET (fillfactor = 70)")
