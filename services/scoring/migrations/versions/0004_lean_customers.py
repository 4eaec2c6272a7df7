"""Customers without a stored card, with the facts as json and a row version.

The card was written for every customer on every batch but only its name and email were ever
read (the read API builds cards from the facts); it goes, and those two become columns. The
facts are read only by scoring itself, so ``json`` (stored as written) replaces ``jsonb``
(parsed into a binary form on every write). Every write of a customer takes a fresh
``version`` from one sequence, so the consumer can keep the facts it wrote and ask for them
again only when someone else has written the row since.

Revision ID: scoring_0004
Revises: scoring_0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scoring_0004"
down_revision: str | None = "scoring_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("customers", sa.Column("name", sa.String(200)), schema="scoring")
    op.add_column("customers", sa.Column("email", sa.String(254)), schema="scoring")
    op.execute(
        "UPDATE scoring.customers SET name = card #>> '{profile,name}', "
        "email = card #>> '{profile,email}'"
    )
    op.drop_column("customers", "card", schema="scoring")
    op.execute("ALTER TABLE scoring.customers ALTER COLUMN state TYPE json USING state::json")
    op.execute("CREATE SEQUENCE scoring.customer_versions")
    op.add_column(
        "customers",
        sa.Column("version", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        schema="scoring",
    )


def downgrade() -> None:
    op.drop_column("customers", "version", schema="scoring")
    op.execute("DROP SEQUENCE scoring.customer_versions")
    op.execute("ALTER TABLE scoring.customers ALTER COLUMN state TYPE jsonb USING state::jsonb")
    # The cards come back with the next change of each customer (or a refit); until then
    # they hold only the profile's name and email.
    op.add_column(
        "customers",
        sa.Column(
            "card",
            sa.dialects.postgresql.JSONB,
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
        schema="scoring",
    )
    op.execute(
        "UPDATE scoring.customers SET card = jsonb_build_object('profile', "
        "jsonb_build_object('name', name, 'email', email))"
    )
    op.alter_column("customers", "card", server_default=None, schema="scoring")
    op.drop_column("customers", "email", schema="scoring")
    op.drop_column("customers", "name", schema="scoring")
