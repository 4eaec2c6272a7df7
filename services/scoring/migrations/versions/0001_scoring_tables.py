"""customers, inbox, outbox, stage history, population

Revision ID: scoring_0001
Revises:
Create Date: 2026-11-25 12:03:21.217647
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "scoring_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("state", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("card", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("stage_since", sa.Date(), nullable=True),
        sa.Column("tier", sa.String(length=16), nullable=True),
        sa.Column("segment", sa.String(length=32), nullable=True),
        sa.Column("strategy", sa.String(length=16), nullable=True),
        sa.Column("value_score", sa.Float(), nullable=False),
        sa.Column("lifetime_spend", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("clv", sa.Float(), nullable=True),
        sa.Column("p_alive", sa.Float(), nullable=True),
        sa.Column("last_order_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_transition_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("search", sa.String(length=600), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_customers")),
        schema="scoring",
    )
    op.create_index(
        "ix_customers_next_transition_at",
        "customers",
        ["next_transition_at"],
        unique=False,
        schema="scoring",
        postgresql_where=sa.text("next_transition_at IS NOT NULL"),
    )
    op.create_index("ix_customers_stage", "customers", ["stage"], unique=False, schema="scoring")
    op.create_index("ix_customers_tier", "customers", ["tier"], unique=False, schema="scoring")
    op.create_table(
        "inbox",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_inbox")),
        schema="scoring",
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        schema="scoring",
    )
    op.create_table(
        "population",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("fitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_population")),
        schema="scoring",
    )
    op.create_table(
        "stage_history",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("from_stage", sa.String(length=16), nullable=True),
        sa.Column("to_stage", sa.String(length=16), nullable=False),
        sa.Column("at", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stage_history")),
        schema="scoring",
    )
    op.create_index("ix_stage_history_at", "stage_history", ["at"], unique=False, schema="scoring")
    op.create_index(
        "ix_stage_history_customer_id",
        "stage_history",
        ["customer_id", "at"],
        unique=False,
        schema="scoring",
    )


def downgrade() -> None:

    op.drop_index("ix_stage_history_customer_id", table_name="stage_history", schema="scoring")
    op.drop_index("ix_stage_history_at", table_name="stage_history", schema="scoring")
    op.drop_table("stage_history", schema="scoring")
    op.drop_table("population", schema="scoring")
    op.drop_table("outbox", schema="scoring")
    op.drop_table("inbox", schema="scoring")
    op.drop_index("ix_customers_tier", table_name="customers", schema="scoring")
    op.drop_index("ix_customers_stage", table_name="customers", schema="scoring")
    op.drop_index(
        "ix_customers_next_transition_at",
        table_name="customers",
        schema="scoring",
        postgresql_where=sa.text("next_transition_at IS NOT NULL"),
    )
    op.drop_table("customers", schema="scoring")
