"""Pure parts of ingest: event ids and the wire envelope."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.ingest.intake import _NAMESPACE, derived_event_id, prepare
from services.ingest.schemas import CustomerIn, OrderIn
from shared.events import CustomerData, Envelope, OrderData

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def test_derived_event_id_is_a_uuid5_in_a_fixed_namespace() -> None:
    for name in ["order.paid:c1:o1", "visit.recorded:ü:v", ""]:
        assert derived_event_id(name) == str(uuid.uuid5(_NAMESPACE, name))


def _order(**kw: object) -> OrderIn:
    base: dict[str, object] = {
        "order_id": "o1",
        "customer_id": "c1",
        "occurred_at": NOW,
        "status": "paid",
        "amount": "10.50",
        "currency": "USD",
    }
    return OrderIn.model_validate({**base, **kw})


def test_the_wire_envelope_is_the_shared_envelope_contract() -> None:
    p = prepare(_order(), header_key=None, source="shop", received_at=NOW)
    env = Envelope.from_json(p.value)
    assert env.event_id == p.event_id
    assert env.event_type == "order.paid"
    assert env.customer_id == "c1"
    assert env.occurred_at == NOW
    assert env.source == "shop"
    assert isinstance(env.data, OrderData)
    assert str(env.data.amount) == "10.50"


def test_event_id_comes_from_body_then_header_then_natural_id() -> None:
    assert (
        prepare(_order(event_id="e-1"), header_key="h-1", source="s", received_at=NOW).event_id
        == "e-1"
    )
    assert prepare(_order(), header_key="h-1", source="s", received_at=NOW).event_id == "h-1"
    derived = prepare(_order(), header_key=None, source="s", received_at=NOW).event_id
    assert (
        derived
        == prepare(_order(), header_key=None, source="s", received_at=datetime.now(UTC)).event_id
    )
    # Another status of the same order is another event.
    assert (
        derived
        != prepare(_order(status="refunded"), header_key=None, source="s", received_at=NOW).event_id
    )


def test_a_different_payload_under_the_same_id_has_a_different_hash() -> None:
    a = prepare(_order(event_id="e"), header_key=None, source="s", received_at=NOW)
    b = prepare(_order(event_id="e", amount="11"), header_key=None, source="s", received_at=NOW)
    assert a.event_id == b.event_id
    assert a.payload_hash != b.payload_hash


def test_a_profile_upsert_carries_only_the_fields_sent() -> None:
    item = CustomerIn.model_validate({"customer_id": "c1", "email": "a@b.co"})
    p = prepare(item, header_key=None, source="s", received_at=NOW)
    env = Envelope.from_json(p.value)
    assert isinstance(env.data, CustomerData)
    assert env.data.model_fields_set == {"email"}
    assert env.occurred_at == NOW  # defaulted to the time received
    later = prepare(item, header_key=None, source="s", received_at=datetime.now(UTC))
    assert (later.event_id, later.payload_hash) == (p.event_id, p.payload_hash)
