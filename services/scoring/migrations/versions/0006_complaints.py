"""Complaints measured: one row per complaint, for the overdue list and resolution times.

The consumer keeps the table from each customer's facts in the batch's transaction. Rows for
the complaints already known are filled here from the stored facts: raised at the earliest
event, resolved at the latest when that is a resolution, held to the customer's current tier,
and without severity or category (the facts did not keep them before this revision; a
rebuild recovers them from the events). The same tier is recorded in the facts
(``complaint_tiers``), so the card and the next write agree with the table.

Revision ID: scoring_0006
Revises: scoring_0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "scoring_0006"
down_revision: str | None = "scoring_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BACKFILL = """
INSERT INTO scoring.complaints (customer_id, complaint_id, tier, opened_at, resolved_at)
SELECT customer_id, complaint_id, tier,
    to_timestamp(min(at) / 1e6),
    CASE WHEN (array_agg(status ORDER BY at DESC, status = 'resolved' DESC, eid DESC))[1]
        = 'resolved' THEN to_timestamp(max(at) / 1e6) END
FROM (
    SELECT c.customer_id, c.tier, k.key AS complaint_id, e.key AS eid,
        e.value ->> 0 AS status, CAST(e.value ->> 1 AS bigint) AS at
    FROM scoring.customers AS c
    CROSS JOIN LATERAL jsonb_each(CAST(c.state AS jsonb) -> 'complaints') AS k
    CROSS JOIN LATERAL jsonb_each(k.value) AS e
) AS events
GROUP BY customer_id, complaint_id, tier
"""

# The facts record the same tier for each complaint, so the card, the table and the next
# write agree.
_HOLD = """
UPDATE scoring.customers AS c
SET state = CAST(jsonb_set(CAST(c.state AS jsonb), '{complaint_tiers}', (
    SELECT jsonb_object_agg(k, to_jsonb(c.tier))
    FROM jsonb_object_keys(CAST(c.state AS jsonb) -> 'complaints') AS k)) AS json)
WHERE CAST(c.state AS jsonb) -> 'complaints' <> '{}'::jsonb
"""


def upgrade() -> None:
    op.create_table(
        "complaints",
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("complaint_id", sa.String(128), nullable=False),
        sa.Column("severity", sa.String(8)),
        sa.Column("category", sa.String(64)),
        sa.Column("tier", sa.String(16)),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("customer_id", "complaint_id", name=op.f("pk_complaints")),
        schema="scoring",
    )
    op.create_index(
        "ix_complaints_open",
        "complaints",
        ["opened_at", "customer_id", "complaint_id"],
        schema="scoring",
        postgresql_where=sa.text("resolved_at IS NULL"),
    )
    op.create_index(
        "ix_complaints_resolved_at",
        "complaints",
        ["resolved_at"],
        schema="scoring",
        postgresql_where=sa.text("resolved_at IS NOT NULL"),
    )
    op.execute(_BACKFILL)
    op.execute(_HOLD)


def downgrade() -> None:
    op.drop_table("complaints", schema="scoring")
