"""Identities: merged customers, the ids they are known by, and duplicates dismissed.

- ``customer_ids``: every customer id scoring has applied an event for, and the survivor it
  was merged into (null while it is its own customer). A merge writes the merged ids' rows
  before it reads their facts, and every batch locks its customers' rows here first, so an
  event for an id being merged waits for the merge and then sees it (then it is forwarded).
  Chains are kept flat: a survivor merged in turn hands its aliases to the new survivor.
- ``inbox.forwarded_to``: the survivor an event that came under a merged id was forwarded to;
  its forwarded copy (same event id, that survivor as customer) is then claimed once.
- ``forwards``: forwarded events not yet published to the events topic (an outbox).
- ``identifiers``: each customer's emails, phones and external ids, normalised, for search and
  the duplicates report.
- ``duplicate_dismissals``: pairs an operator said are not one person.

Revision ID: scoring_0008
Revises: scoring_0009 (re-chained after scoring_0009 reached main)
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scoring_0008"
down_revision: str | None = "scoring_0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_ids",
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("survivor_id", sa.String(128)),
        sa.Column("merged_by", sa.String(128)),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customer_ids")),
        schema="scoring",
    )
    op.create_index(
        "ix_customer_ids_survivor_id",
        "customer_ids",
        ["survivor_id"],
        schema="scoring",
        postgresql_where=sa.text("survivor_id IS NOT NULL"),
    )
    op.add_column("inbox", sa.Column("forwarded_to", sa.String(128)), schema="scoring")
    op.create_table(
        "forwards",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_forwards")),
        schema="scoring",
    )
    op.create_table(
        "identifiers",
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),  # '' for email and phone
        sa.Column("value", sa.String(254), nullable=False),
        sa.PrimaryKeyConstraint(
            "customer_id", "kind", "source", "value", name=op.f("pk_identifiers")
        ),
        schema="scoring",
    )
    op.create_index("ix_identifiers_value", "identifiers", ["value", "kind"], schema="scoring")
    op.create_table(
        "duplicate_dismissals",
        sa.Column("first_id", sa.String(128), nullable=False),
        sa.Column("second_id", sa.String(128), nullable=False),
        sa.Column("dismissed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("first_id", "second_id", name=op.f("pk_duplicate_dismissals")),
        schema="scoring",
    )


def downgrade() -> None:
    op.drop_table("duplicate_dismissals", schema="scoring")
    op.drop_table("identifiers", schema="scoring")
    op.drop_table("forwards", schema="scoring")
    op.drop_column("inbox", "forwarded_to", schema="scoring")
    op.drop_index("ix_customer_ids_survivor_id", "customer_ids", schema="scoring")
    op.drop_table("customer_ids", schema="scoring")
