"""The tag filter's GIN index holds only customers who have a tag.

Most customers have none, yet every write of a customer's row put an entry for the empty
array into the index (a row's write is never HOT: its spend and scores change), and a GIN
index takes it through its pending list and a write of its metapage. In a replay of the
CDNOW master log that was 43,000 such entries, 7 MB of the write-ahead log, all for arrays
no filter can match. The filter asks ``cardinality(tags) > 0`` beside ``tags @> ARRAY[tag]``
so the planner may use the partial index.

Revision ID: scoring_0014
Revises: scoring_0013
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scoring_0014"
down_revision: str | None = "scoring_0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_customers_tags", table_name="customers", schema="scoring")
    op.create_index(
        "ix_customers_tags",
        "customers",
        ["tags"],
        schema="scoring",
        postgresql_using="gin",
        postgresql_where=sa.text("cardinality(tags) > 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_customers_tags", table_name="customers", schema="scoring")
    op.create_index(
        "ix_customers_tags", "customers", ["tags"], schema="scoring", postgresql_using="gin"
    )
