"""Stage rules act once per stage episode: the decisions already in the ledger, keyed by the
id of the change that moved the customer, are re-keyed by the episode the customer is still
in (``churned@2026-10-01``), so upgrading sends nothing twice.

A decision is re-keyed when its rule is a stage rule whose targets include the customer's
stage in the card replica, and it was decided on or after the day that stage was entered;
of several such decisions for one rule and customer, the earliest takes the key. Decisions of
episodes the customer has left keep their old key: those episodes are never matched again.

Revision ID: outreach_0006
Revises: outreach_0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "outreach_0006"
down_revision: str | None = "outreach_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        WITH episode AS (
            SELECT DISTINCT ON (a.rule_id, a.customer_id)
                   a.id,
                   (c.card->>'stage') || '@'
                       || coalesce(left(c.card->>'stage_since', 10), '') AS key
            FROM outreach.actions a
            JOIN outreach.rules r ON r.id = a.rule_id
            JOIN outreach.cards c ON c.customer_id = a.customer_id
            WHERE r.definition->'trigger'->>'type' = 'stage'
              AND position('@' in a.occurrence) = 0
              AND (
                  jsonb_array_length(coalesce(r.definition->'trigger'->'to', '[]'::jsonb)) = 0
                  OR (r.definition->'trigger'->'to') ? (c.card->>'stage')
              )
              AND (
                  c.card->>'stage_since' IS NULL
                  OR a.decided_at >= left(c.card->>'stage_since', 10)::date
              )
            ORDER BY a.rule_id, a.customer_id, a.decided_at, a.id
        )
        UPDATE outreach.actions a
        SET occurrence = episode.key
        FROM episode
        WHERE a.id = episode.id
          AND NOT EXISTS (
              SELECT 1 FROM outreach.actions b
              WHERE b.rule_id = a.rule_id AND b.customer_id = a.customer_id
                AND b.occurrence = episode.key
          )
        """
    )


def downgrade() -> None:
    # The change ids are not kept: re-keyed decisions keep their episode key, which the older
    # code never matches again (it keys by change id), so a downgrade sends nothing twice
    # for transitions already decided, and acts on new transitions as before.
    pass
