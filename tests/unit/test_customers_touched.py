"""What an event on the events topic touches, for the consumer's overlapped batches."""

from __future__ import annotations

from datetime import UTC, datetime

from aiokafka.structs import ConsumerRecord

from services.scoring.shell.consumer import customers_touched
from shared.events import Envelope, EventType, MergeData, VisitData

AT = datetime(2026, 3, 1, tzinfo=UTC)


def record(key: bytes | None, value: bytes) -> ConsumerRecord:
    return ConsumerRecord("events", 0, 0, 0, 0, key, value, None, 0, len(value), ())


def event(event_type: EventType, data: VisitData | MergeData) -> bytes:
    """An event of customer c-1, as it travels on the events topic."""
    return Envelope(
        event_id="e-1",
        event_type=event_type,
        customer_id="c-1",
        occurred_at=AT,
        received_at=AT,
        source="ops",
        data=data,
    ).to_json()


def test_an_event_touches_the_customer_it_is_keyed_by() -> None:
    visit = event(EventType.VISIT_RECORDED, VisitData(visit_id="v-1", channel="web"))
    assert list(customers_touched(record(b"c-1", visit))) == [b"c-1"]


def test_a_merge_touches_the_survivor_and_every_customer_it_folds_in() -> None:
    merge = event(
        EventType.CUSTOMER_MERGED,
        MergeData(merged_ids=["c-2", "c-3"], reason="same email", actor="ops"),
    )
    assert list(customers_touched(record(b"c-1", merge))) == [b"c-1", b"c-2", b"c-3"]


def test_an_undecodable_merge_touches_its_key_alone() -> None:
    # The handler rejects it; it must not stop the batch being split.
    value = b'{"event_type": "customer.merged", "data": 1}'
    assert list(customers_touched(record(b"c-1", value))) == [b"c-1"]
