"""Order facts: one row per live order, for the money in the flow figures.

The consumer keeps the table from each customer's facts in the batch's transaction. Rows for
the orders already known are filled here from the stored facts, by the rules of
``CustomerState.purchases`` with every fact counted: an order is bought at the earliest of its
placed and paid times, its total is that of its latest placed or paid event (a payment wins a
tie with a placement, then the greater event id), it is worth that total less its refunds, and
it is gone when cancelled or refunded in full (unless its total is zero).

Revision ID: scoring_0007
Revises: scoring_0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scoring_0007"
down_revision: str | None = "scoring_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each stored order event is [kind, at (microseconds since the epoch), amount?, outstanding?].
BACKFILL_SQL = """
INSERT INTO scoring.order_facts (customer_id, order_id, at, day, net)
SELECT customer_id, order_id, bought, CAST(bought AT TIME ZONE 'UTC' AS date), total - refunded
FROM (
    SELECT customer_id, order_id,
        timestamptz '1970-01-01 00:00:00+00'
            + min(at) FILTER (WHERE live) * interval '1 microsecond' AS bought,
        (array_agg(amount ORDER BY at DESC, kind = 'paid' DESC, eid DESC) FILTER (WHERE live))[1]
            AS total,
        coalesce(sum(amount) FILTER (WHERE kind = 'refunded'), 0) AS refunded,
        bool_or(kind = 'cancelled') AS cancelled
    FROM (
        SELECT c.customer_id, o.key AS order_id, e.key AS eid, e.value ->> 0 AS kind,
            CAST(e.value ->> 1 AS bigint) AS at,
            coalesce(CAST(e.value ->> 2 AS numeric), 0) AS amount,
            e.value ->> 0 IN ('placed', 'paid') AS live
        FROM scoring.customers AS c
        CROSS JOIN LATERAL jsonb_each(CAST(c.state AS jsonb) -> 'orders') AS o
        CROSS JOIN LATERAL jsonb_each(o.value) AS e
    ) AS events
    GROUP BY customer_id, order_id
) AS orders
WHERE NOT cancelled AND bought IS NOT NULL AND (refunded < total OR total = 0)
"""


def upgrade() -> None:
    op.create_table(
        "order_facts",
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("net", sa.Numeric(18, 4), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", "order_id", name=op.f("pk_order_facts")),
        schema="scoring",
    )
    op.create_index("ix_order_facts_day", "order_facts", ["day"], schema="scoring")
    op.execute(BACKFILL_SQL)


def downgrade() -> None:
    op.drop_table("order_facts", schema="scoring")
