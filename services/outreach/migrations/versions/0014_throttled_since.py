"""The ledger remembers since when an action's receiver has answered it busy
(``throttled_since``: a 429 or 503 with Retry-After, every time it was asked since), so
delivery gives the action up once that has lasted ``delivery_throttled_give_up_hours``.

Revision ID: outreach_0014
Revises: outreach_0013
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "outreach_0014"
down_revision: str | None = "outreach_0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "actions", sa.Column("throttled_since", sa.DateTime(timezone=True)), schema="outreach"
    )


def downgrade() -> None:
    op.drop_column("actions", "throttled_since", schema="outreach")
