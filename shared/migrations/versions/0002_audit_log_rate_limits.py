"""The audit log, shared rate-limit budgets, and an optional rate limit per API key.

Revision ID: auth_0002
Revises: auth_0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "auth_0002"
down_revision: str | None = "auth_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor_key_id", sa.String(36), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("service", sa.String(32), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("before", postgresql.JSONB(), nullable=True),
        sa.Column("after", postgresql.JSONB(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        schema="auth",
    )
    # The listing walks (at, id) newest first; a subject's history is the common question.
    op.create_index("ix_audit_log_at_id", "audit_log", ["at", "id"], schema="auth")
    op.create_index("ix_audit_log_subject_at", "audit_log", ["subject", "at", "id"], schema="auth")

    # UNLOGGED: a budget is worth nothing after a crash (everyone restarts with a full one),
    # and a transaction writing only unlogged tables commits without waiting for a WAL flush,
    # which keeps the per-request cost of the limiter to one short round trip.
    op.create_table(
        "rate_limits",
        sa.Column("key_id", sa.String(36), nullable=False),
        sa.Column("tat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("allowed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key_id", name="pk_rate_limits"),
        schema="auth",
        prefixes=["UNLOGGED"],
    )

    op.add_column(
        "api_keys", sa.Column("rate_per_second", sa.Float(), nullable=True), schema="auth"
    )
    op.add_column("api_keys", sa.Column("rate_burst", sa.Integer(), nullable=True), schema="auth")
    op.create_check_constraint(
        "ck_api_keys_rate_limit",
        "api_keys",
        "(rate_per_second IS NULL) = (rate_burst IS NULL) "
        "AND (rate_per_second IS NULL OR rate_per_second >= 0) "
        "AND (rate_burst IS NULL OR rate_burst >= 1)",
        schema="auth",
    )


def downgrade() -> None:
    op.drop_constraint("ck_api_keys_rate_limit", "api_keys", schema="auth", type_="check")
    op.drop_column("api_keys", "rate_burst", schema="auth")
    op.drop_column("api_keys", "rate_per_second", schema="auth")
    op.drop_table("rate_limits", schema="auth")
    op.drop_index("ix_audit_log_subject_at", "audit_log", schema="auth")
    op.drop_index("ix_audit_log_at_id", "audit_log", schema="auth")
    op.drop_table("audit_log", schema="auth")
