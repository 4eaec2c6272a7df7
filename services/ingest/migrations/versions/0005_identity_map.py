"""The identity map: each customer id's survivor, and each identifier's customer.

Ingest resolves every incoming event to its customer's survivor before publishing, and merges
customers explicitly or on a verified identifier. Customers already known by their idempotency
keys are entered with the time of their oldest key, so the customer seen first still survives
an automatic merge after the upgrade.

Revision ID: ingest_0005
Revises: ingest_0004
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ingest_0005"
down_revision: str | None = "ingest_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("survivor_id", sa.String(128), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("merge_event_id", sa.String(128)),
        sa.Column("merged_at", sa.DateTime(timezone=True)),
        schema="ingest",
    )
    op.create_index("ix_identities_survivor_id", "identities", ["survivor_id"], schema="ingest")
    op.create_table(
        "identifiers",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("source", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(254), primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        schema="ingest",
    )
    op.create_index("ix_identifiers_customer_id", "identifiers", ["customer_id"], schema="ingest")
    op.execute(
        """
        INSERT INTO ingest.identities (customer_id, survivor_id, first_seen)
        SELECT customer_id, customer_id, min(created_at) FROM ingest.idempotency_keys
        GROUP BY customer_id
        """
    )


def downgrade() -> None:
    op.drop_table("identifiers", schema="ingest")
    op.drop_table("identities", schema="ingest")
