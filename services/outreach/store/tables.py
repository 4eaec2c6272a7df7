"""Outreach's tables (schema ``outreach``).

``actions`` is the ledger: one row per decided (rule, customer, occurrence), unique, so a
second decision is impossible; its status walks scheduled/held → pending → sent (or failed,
suppressed, unknown). Delivery workers pick due ``pending`` rows with SKIP LOCKED.
"""

from __future__ import annotations

from sqlalchemy import (
    CHAR,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from shared.db import schema_metadata

SCHEMA = "outreach"
metadata = schema_metadata(SCHEMA)

rules = Table(
    "rules",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("definition", JSONB, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True)),
    # Health: raises since the last save, the last error, why outreach disabled it.
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("last_error_at", DateTime(timezone=True)),
    Column("disabled_reason", Text),
)

rule_versions = Table(
    "rule_versions",
    metadata,
    Column("rule_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("definition", JSONB, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("rule_id", "version", name="pk_rule_versions"),
)

# The latest card of every customer, as scoring last published it.
cards = Table(
    "cards",
    metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("card", JSONB, nullable=False),
    Column("complaint_open", Boolean, nullable=False),
    Column("change_at", DateTime(timezone=True), nullable=False),
)

# When each schedule rule next fires for each customer (null: nothing left to fire), and the
# instant of the last occurrence the scheduler handled (a recomputation never moves back onto
# it).
schedule = Table(
    "schedule",
    metadata,
    Column("rule_id", String(64), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("due_at", DateTime(timezone=True)),
    Column("handled_at", DateTime(timezone=True)),
    # Since when the rule's daily limit has passed the customer over (null: it has not).
    Column("waiting_since", DateTime(timezone=True)),
    # A broadcast rule's row: the launch its customer waits in line for.
    Column("launch_id", String(128)),
    PrimaryKeyConstraint("rule_id", "customer_id", name="pk_schedule"),
    Index("ix_schedule_due_at", "due_at"),
    Index("ix_schedule_waiting", "rule_id", postgresql_where=text("waiting_since IS NOT NULL")),
)

# Each broadcast launch's content as its cards carried it (null: a launch without content),
# for the customers who wait in the rule's line for a later day's slot.
launches = Table(
    "launches",
    metadata,
    Column("rule_id", String(64), nullable=False),
    Column("launch_id", String(128), nullable=False),
    Column("content", JSONB),
    Column("launched_at", DateTime(timezone=True), nullable=False),
    Column("actor", String(100)),  # the key (or user) that launched it
    PrimaryKeyConstraint("rule_id", "launch_id", name="pk_launches"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("change_id", String(64), primary_key=True),
    # When ingest received the change's event (else when scoring made it); pruned by it.
    Column("received_at", DateTime(timezone=True), nullable=False),
    Index("ix_inbox_received_at", "received_at"),
)

actions = Table(
    "actions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("rule_id", String(64), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("occurrence", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("channel_id", String(64)),  # the channel the rule named; null: the kind's current
    Column("audience", String(8), nullable=False, server_default=text("'customer'")),
    Column("priority", SmallInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", String(32)),
    Column("detail", Text),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("not_before", DateTime(timezone=True)),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("attempts", SmallInteger, nullable=False, server_default=text("0")),
    Column("last_error", Text),
    # Since when its receiver has answered it busy (429/503 with Retry-After) every time it
    # was asked; null once any other answer came. Delivery gives it up after a while.
    Column("throttled_since", DateTime(timezone=True)),
    Column("sent_at", DateTime(timezone=True)),
    Column("subject", Text),
    Column("body", Text),
    Column("offer", JSONB),
    # The experiment: `treatment`, `control` (the rule's hold-out) or `global_control`; null
    # for rows decided before arms were kept. Tier, strategy and the forecast of the goal are
    # the card's at decision.
    Column("arm", String(16)),
    Column("tier", String(16)),
    Column("strategy", String(16)),
    Column("baseline", Float),
    Column("goal", JSONB),  # the goal measured, as the rule had it when deciding
    # The customer id it was decided for, when a merge moved it to that id's survivor.
    Column("merged_from", String(128)),
    UniqueConstraint("rule_id", "customer_id", "occurrence", name="uq_actions_occurrence"),
    Index("ix_actions_customer_decided", "customer_id", "decided_at"),
    Index("ix_actions_decided", "decided_at", "id"),
    Index("ix_actions_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
    Index(
        "ix_actions_waiting", "not_before", postgresql_where=text("status IN ('scheduled', 'held')")
    ),
)

# Every attempt delivery made to send an action, written with the action's own update: how it
# ended (the sender's verdict), the receiver's HTTP status or the error (truncated), and how
# long it took. Deleted with the customer's message content on erasure.
delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("action_id", String(36), nullable=False),
    Column("attempt", SmallInteger, nullable=False),  # 1 for the first
    Column("at", DateTime(timezone=True), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(32)),
    Column("http_status", SmallInteger),
    Column("error", Text),
    Column("duration_ms", Integer, nullable=False),
    PrimaryKeyConstraint("action_id", "attempt", name="pk_delivery_attempts"),
)

# The events a goal can be reached by, as outreach saw them on the changes topic: attribution
# reads them beside the ledger. Deleted with the customer on erasure.
goal_events = Table(
    "goal_events",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    # An order event's own amount (a refund's: what it gave back); null for other events.
    # Attribution nets an order's refunds and cancellation (services.outreach.core.attribution).
    Column("revenue", Numeric(18, 4)),
    Column("data", JSONB, nullable=False),
    Index("ix_goal_events_customer", "customer_id", "occurred_at"),
)

policy = Table(
    "policy",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("definition", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("reason", String(200), nullable=False),
    Column("source", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

channels = Table(
    "channels",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("config", JSONB, nullable=False),
    Column("secret", String(200)),
    Column("enabled", Boolean, nullable=False),
    Column("disabled_reason", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Merged customers: each merged id (``customer_id``) and the survivor it is from the merge on;
# a change still arriving under a merged id is the survivor's. Deleted with the survivor.
aliases = Table(
    "aliases",
    metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("survivor_id", String(128), nullable=False),
    Column("merged_at", DateTime(timezone=True), nullable=False),
    Column("change_id", String(64), nullable=False),
    Index("ix_aliases_survivor", "survivor_id"),
)

# Customers erased, by digest (never the id): changes from before the erasure are dropped.
erasures = Table(
    "erasures",
    metadata,
    Column("customer_digest", CHAR(64), primary_key=True),
    Column("erased_at", DateTime(timezone=True), nullable=False),
    Column("change_id", String(64), nullable=False),
)

# Fired actions waiting for the relay to crm.outreach-actions.v1.
outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Facts outreach learned about customers (their own unsubscribe, its lifting), as events
# waiting for the relay to crm.customer-events.v1, where scoring learns them like any other.
events_outbox = Table(
    "events_outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
