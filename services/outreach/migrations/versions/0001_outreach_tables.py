"""outreach tables

Revision ID: outreach_0001
Revises:
Create Date: 2026-11-25 12:16:05.882830
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "outreach_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "actions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("occurrence", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.SmallInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.SmallInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("offer", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_actions")),
        sa.UniqueConstraint("rule_id", "customer_id", "occurrence", name="uq_actions_occurrence"),
        schema="outreach",
    )
    op.create_index(
        "ix_actions_decided", "actions", ["decided_at", "id"], unique=False, schema="outreach"
    )
    op.create_index(
        "ix_actions_customer_decided",
        "actions",
        ["customer_id", "decided_at"],
        unique=False,
        schema="outreach",
    )
    op.create_index(
        "ix_actions_due",
        "actions",
        ["next_attempt_at"],
        unique=False,
        schema="outreach",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_actions_waiting",
        "actions",
        ["not_before"],
        unique=False,
        schema="outreach",
        postgresql_where=sa.text("status IN ('scheduled', 'held')"),
    )
    op.create_table(
        "cards",
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("card", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("complaint_open", sa.Boolean(), nullable=False),
        sa.Column("change_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_cards")),
        schema="outreach",
    )
    op.create_table(
        "channels",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("config", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("disabled_reason", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
        schema="outreach",
    )
    op.create_table(
        "inbox",
        sa.Column("change_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("change_id", name=op.f("pk_inbox")),
        schema="outreach",
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        schema="outreach",
    )
    op.create_table(
        "policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("definition", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy")),
        schema="outreach",
    )
    op.create_table(
        "rule_versions",
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "version", name="pk_rule_versions"),
        schema="outreach",
    )
    op.create_table(
        "rules",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules")),
        schema="outreach",
    )
    op.create_table(
        "schedule",
        sa.Column("rule_id", sa.String(length=64), nullable=False),
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "customer_id", name="pk_schedule"),
        schema="outreach",
    )
    op.create_index("ix_schedule_due_at", "schedule", ["due_at"], unique=False, schema="outreach")
    op.create_table(
        "suppressions",
        sa.Column("customer_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_suppressions")),
        schema="outreach",
    )


def downgrade() -> None:

    op.drop_table("suppressions", schema="outreach")
    op.drop_index("ix_schedule_due_at", table_name="schedule", schema="outreach")
    op.drop_table("schedule", schema="outreach")
    op.drop_table("rules", schema="outreach")
    op.drop_table("rule_versions", schema="outreach")
    op.drop_table("policy", schema="outreach")
    op.drop_table("outbox", schema="outreach")
    op.drop_table("inbox", schema="outreach")
    op.drop_table("channels", schema="outreach")
    op.drop_table("cards", schema="outreach")
    op.drop_index(
        "ix_actions_waiting",
        table_name="actions",
        schema="outreach",
        postgresql_where=sa.text("status IN ('scheduled', 'held')"),
    )
    op.drop_index(
        "ix_actions_due",
        table_name="actions",
        schema="outreach",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.drop_index("ix_actions_customer_decided", table_name="actions", schema="outreach")
    op.drop_table("actions", schema="outreach")
