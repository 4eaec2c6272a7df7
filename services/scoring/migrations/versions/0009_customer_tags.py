"""The customer list's tag filter and name sort: each customer's profile tags in a column of
their own (a GIN index answers ``tags @> ARRAY[tag]`` without reading every customer's facts),
and an index for the listing sorted by name.

The write path fills ``tags`` from the winning ``tags`` register of the customer's profile;
rows already stored are filled here from the same register of their stored facts
(``profile.tags`` is ``[at, event_id, value]``, the value a list of strings or null).

Revision ID: scoring_0009
Revises: scoring_0007
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "scoring_0009"
down_revision: str | None = "scoring_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL_SQL = """
UPDATE scoring.customers
SET tags = ARRAY(SELECT json_array_elements_text(state #> '{profile,tags,2}'))
WHERE json_typeof(state #> '{profile,tags,2}') = 'array'
"""


def upgrade() -> None:
    op.add_column(
        "customers",
        sa.Column("tags", postgresql.ARRAY(sa.String()), nullable=True),
        schema="scoring",
    )
    op.execute(BACKFILL_SQL)
    op.create_index(
        "ix_customers_tags", "customers", ["tags"], schema="scoring", postgresql_using="gin"
    )
    op.create_index(
        "ix_customers_name",
        "customers",
        [sa.text("lower(name)"), "customer_id"],
        schema="scoring",
    )


def downgrade() -> None:
    op.drop_index("ix_customers_name", table_name="customers", schema="scoring")
    op.drop_index("ix_customers_tags", table_name="customers", schema="scoring")
    op.drop_column("customers", "tags", schema="scoring")
