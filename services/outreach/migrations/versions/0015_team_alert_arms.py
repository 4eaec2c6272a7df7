"""Team alerts fall in an arm: the actions of rules with a team audience decided before this
have none (a team alert was not measured), and are the treatment arm of their rule now (none
of them was ever held out).

Revision ID: outreach_0015
Revises: outreach_0014
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "outreach_0015"
down_revision: str | None = "outreach_0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "UPDATE outreach.actions SET arm = 'treatment' WHERE audience = 'team' AND arm IS NULL"
    )


def downgrade() -> None:
    op.execute("UPDATE outreach.actions SET arm = NULL WHERE audience = 'team'")
