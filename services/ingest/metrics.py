"""Ingest's Prometheus metrics."""

from prometheus_client import Counter

EVENTS = Counter(
    "tend_ingest_events_total", "Events received, by type and outcome", ["event_type", "outcome"]
)
