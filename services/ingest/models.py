"""Ingest's tables (schema ``ingest``): only what makes retries safe. No customer state."""

from __future__ import annotations

from sqlalchemy import CHAR, Column, DateTime, Index, LargeBinary, SmallInteger, String, Table

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
