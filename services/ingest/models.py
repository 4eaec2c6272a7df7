"""Ingest's tables (schema ``ingest``): what makes retries safe, and the identity map."""

from __future__ import annotations

from sqlalchemy import (
    CHAR,
    Boolean,
    Column,
    DateTime,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Table,
)

from shared.db import schema_metadata

SCHEMA = "ingest"
metadata = schema_metadata(SCHEMA)

# state: 0 = claimed, publish not yet acknowledged; 1 = acknowledged by the broker.
# A key lives TEND_EVENT_ID_RETENTION_DAYS (400) from created_at, the event's received_at, so
# a row is kept small: the payload hash is its first 16 bytes, and pages are filled to 90%.
PENDING = 0
PUBLISHED = 1

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("payload_hash", LargeBinary(16), nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_idempotency_keys_created_at", "created_at"),
)

# Customers erased, by digest (never the id), and when: their earlier events are refused.
erasures = Table(
    "erasures",
    metadata,
    Column("customer_digest", CHAR(64), primary_key=True),
    Column("erased_at", DateTime(timezone=True), nullable=False),
)

# The identity map: the only customer state ingest keeps. Every customer id ingest has seen,
# with the id its events are published under (itself, or the survivor of a merge; chains are
# flattened when they form, so one hop always reaches the survivor) and when it was first seen
# (the earlier of two customers survives an automatic merge).
identities = Table(
    "identities",
    metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("survivor_id", String(128), nullable=False),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    # The customer.merged event that made this id an alias, and when.
    Column("merge_event_id", String(128)),
    Column("merged_at", DateTime(timezone=True)),
    Index("ix_identities_survivor_id", "survivor_id"),
)

# Each identifier (kind, source, value; source is '' for emails and phones, which no source
# owns) -> the customer id that first carried it, whether a backend vouched for it, and when.
identifiers = Table(
    "identifiers",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("value", String(254), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("verified", Boolean, nullable=False),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Index("ix_identifiers_customer_id", "customer_id"),
)
