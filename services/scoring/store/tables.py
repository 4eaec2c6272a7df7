"""Scoring's tables (schema ``scoring``).

``customers`` holds each customer's facts (``state``, the source of truth) beside the figures
the read API filters, sorts and lists by, which are refreshed whenever the state or the
population changes (cards themselves are built from the facts when read, and travel on the
changes topic). ``inbox`` makes every event apply once; ``outbox`` holds changes until the relay has
published them.
"""

from __future__ import annotations

from sqlalchemy import (
    CHAR,
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    Sequence,
    String,
    Table,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from shared.db import schema_metadata

SCHEMA = "scoring"
metadata = schema_metadata(SCHEMA)

inbox = Table(
    "inbox",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),
    # When ingest received the event: an id is remembered for the inbox retention from then.
    Column("received_at", DateTime(timezone=True), nullable=False),
    # The survivor an event that came under a merged id was forwarded to: its forwarded copy
    # (this event id, that survivor as customer) is claimed once more, and only it.
    Column("forwarded_to", String(128)),
    Index("ix_inbox_received_at", "received_at"),
)

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("state", JSON, nullable=False),
    Column("name", String(200)),
    Column("email", String(254)),
    Column("stage", String(16), nullable=False),
    Column("stage_since", Date),
    Column("tier", String(16)),
    Column("segment", String(32)),
    Column("strategy", String(16)),
    Column("value_score", Float, nullable=False),
    Column("lifetime_spend", Numeric(18, 4), nullable=False),
    Column("clv", Float),
    Column("p_alive", Float),
    Column("last_order_at", DateTime(timezone=True)),
    Column("next_transition_at", DateTime(timezone=True)),
    Column("search", String(600)),
    # The profile's tags, for the listing's tag filter (``tags @> ARRAY[tag]``, GIN-indexed
    # for the customers who have one).
    Column("tags", ARRAY(String)),
    # The membership tier on the customer's last published card: a new card with another one
    # is a membership change (an upgrade or a downgrade rules trigger on).
    Column("member_tier", String(64)),
    # What time moves on the last card published for the customer (core.card.Moving: its
    # windows, scores and counts as one number, and the model's figures; null: none since a
    # rebuild wrote the row): a refit sends the card again when they moved.
    Column("published_drift", BigInteger),
    Column("published_model", JSONB),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # From the sequence below on every write: the facts a consumer holds are current while
    # the row still has the version it wrote.
    Column("version", BigInteger, nullable=False, server_default=text("0")),
    Index(
        "ix_customers_next_transition_at",
        "next_transition_at",
        postgresql_where=text("next_transition_at IS NOT NULL"),
    ),
    Index("ix_customers_stage", "stage"),
    Index("ix_customers_tier", "tier"),
    # The read API's sort orders, with the id as tie-breaker for cursor pagination.
    Index("ix_customers_value_score", "value_score", "customer_id"),
    Index("ix_customers_clv", "clv", "customer_id"),
    Index("ix_customers_p_alive", "p_alive", "customer_id"),
    Index("ix_customers_last_order_at", "last_order_at", "customer_id"),
    Index("ix_customers_name", text("lower(name)"), "customer_id"),
    Index(
        "ix_customers_tags",
        "tags",
        postgresql_using="gin",
        postgresql_where=text("cardinality(tags) > 0"),
    ),
    # The overview's: the top fifth by spend and the counts, read from the index alone.
    Index(
        "ix_customers_overview",
        text("lifetime_spend DESC"),
        postgresql_include=["stage", "tier", "segment", "strategy", "last_order_at"],
    ),
)

customer_versions = Sequence("customer_versions", metadata=metadata)

# Every stage transition of every customer in event time, rewritten for a customer whenever
# their facts change (so late events correct history); feeds the history and flow APIs.
stage_history = Table(
    "stage_history",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("from_stage", String(16)),
    Column("to_stage", String(16), nullable=False),
    Column("at", Date, nullable=False),
    Index("ix_stage_history_customer_id", "customer_id", "at"),
    Index("ix_stage_history_at", "at"),
)

# Every complaint of every customer, kept by the consumer in the batch's transaction from the
# customer's facts (services.scoring.core.complaints), for the overdue list and the
# resolution-time figures; rebuilt with them and deleted with the customer on erasure.
complaints = Table(
    "complaints",
    metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("complaint_id", String(128), primary_key=True),
    Column("severity", String(8)),  # null: recorded before severities were kept
    Column("category", String(64)),
    Column("tier", String(16)),  # the tier it is held to; null: none (regular's target)
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),  # null while open
    Index(
        "ix_complaints_open",
        "opened_at",
        "customer_id",
        "complaint_id",
        postgresql_where=text("resolved_at IS NULL"),
    ),
    Index(
        "ix_complaints_resolved_at",
        "resolved_at",
        postgresql_where=text("resolved_at IS NOT NULL"),
    ),
)

# Every live order of every customer (placed or paid, not cancelled, not wholly refunded): when
# it was bought and what it is worth net of every refund known, kept by the consumer in the
# batch's transaction from the customer's facts, for the money in the flow figures. Rebuilt
# with the facts; on erasure the rows stay for the figures, under the anonymous label the
# stage history gets, with order ids that lead nowhere.
order_facts = Table(
    "order_facts",
    metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("order_id", String(128), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),  # the earliest of placed and paid
    Column("day", Date, nullable=False),  # the UTC day of ``at``
    Column("net", Numeric(18, 4), nullable=False),
    Index("ix_order_facts_day", "day"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Customers erased: by digest (never the id), when, and what they added to the revenue and
# order totals, which stay true after the customer is gone.
erasures = Table(
    "erasures",
    metadata,
    Column("customer_digest", CHAR(64), primary_key=True),
    Column("erased_at", DateTime(timezone=True), nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("lifetime_spend", Numeric(18, 4), nullable=False),
    Column("orders", Integer, nullable=False),
)

population = Table(
    "population",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("params", JSONB, nullable=False),
    Column("fitted_at", DateTime(timezone=True), nullable=False),
    # The rhythm, lifecycle settings and code the stored stage histories were last walked
    # with, as one fingerprint (null: never walked by a refit).
    Column("walked_with", String(64)),
)

# Every customer id an event was applied for, and the survivor it was merged into (null: its
# own customer). Every batch locks its customers' rows here first and a merge writes the merged
# ids' rows before reading their facts, so an event racing a merge waits for it, then sees it.
customer_ids = Table(
    "customer_ids",
    metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("survivor_id", String(128)),
    Column("merged_by", String(128)),  # the customer.merged event's id
    Index(
        "ix_customer_ids_survivor_id",
        "survivor_id",
        postgresql_where=text("survivor_id IS NOT NULL"),
    ),
)

# Events that came under a merged id, on their way to the events topic under the survivor.
forwards = Table(
    "forwards",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Each customer's identifiers as compared (emails lower-cased, phones in E.164, external ids
# with their source), from their events and profile: search and the duplicates report.
identifiers = Table(
    "identifiers",
    metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("source", String(64), primary_key=True),  # '' for emails and phones
    Column("value", String(254), primary_key=True),
    Index("ix_identifiers_value", "value", "kind"),
)

# Pairs an operator said are not one person (the smaller id first).
duplicate_dismissals = Table(
    "duplicate_dismissals",
    metadata,
    Column("first_id", String(128), primary_key=True),
    Column("second_id", String(128), primary_key=True),
    Column("dismissed_at", DateTime(timezone=True), nullable=False),
)
