"""The event envelope: what every consumer of crm.customer-events.v1 relies on."""

from __future__ import annotations

from decimal import Decimal

import jsonschema_rs
import orjson
import pytest
from pydantic import ValidationError

from services.outreach.core.changes import read_change
from shared.card import money_text
from shared.changes import Change
from shared.events import CustomerData, Envelope, OrderData

BASE = {
    "event_id": "e1",
    "customer_id": "c1",
    "occurred_at": "2026-01-01T00:00:00Z",
    "received_at": "2026-01-01T00:00:01Z",
    "source": "api",
}


def test_data_is_parsed_as_the_payload_its_event_type_names() -> None:
    env = Envelope.model_validate(
        {
            **BASE,
            "event_type": "order.refunded",
            "data": {"order_id": "o1", "status": "refunded", "amount": "5.25", "currency": "USD"},
        }
    )
    assert isinstance(env.data, OrderData)
    assert env.data.amount == Decimal("5.25")
    assert Envelope.from_json(env.to_json()) == env


def test_money_never_becomes_a_float_on_the_wire() -> None:
    env = Envelope.model_validate(
        {
            **BASE,
            "event_type": "order.paid",
            "data": {"order_id": "o1", "status": "paid", "amount": "0.1", "currency": "USD"},
        }
    )
    assert b'"amount":"0.1"' in env.to_json()


@pytest.mark.parametrize(
    "data",
    [
        {"email": "not-an-email"},
        {"timezone": "Mars/Base"},
        {"phone": "call me"},
        {"birthday": "1800-01-01"},
        {"locale": "english please"},
        {"nickname": "x"},
        # Python's $ matches before a final newline; the schema's patterns do not.
        {"email": "ada@example.com\n"},
        {"phone": "+33 6 12 34 56 78\n"},
        {"locale": "en-US\n"},
    ],
)
def test_bad_profile_fields_are_rejected(data: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        CustomerData.model_validate(data)


def test_unknown_event_type_and_naive_times_are_rejected() -> None:
    with pytest.raises(ValidationError):
        Envelope.model_validate({**BASE, "event_type": "order.shipped", "data": {}})
    with pytest.raises(ValidationError):
        Envelope.model_validate(
            {
                **BASE,
                "occurred_at": "2026-01-01T00:00:00",
                "event_type": "visit.recorded",
                "data": {"visit_id": "v", "channel": "web"},
            }
        )


def test_a_consumer_ignores_fields_a_newer_producer_added_within_the_version() -> None:
    newer = {
        **BASE,
        "event_type": "order.paid",
        "trace": {"span": "abc"},
        "data": {
            "order_id": "o1",
            "status": "paid",
            "amount": "5.00",
            "currency": "USD",
            "coupon": "SPRING",
            "items": [{"sku": "s1", "quantity": 1, "unit_price": "5.00", "brand": "acme"}],
        },
    }
    env = Envelope.from_json(orjson.dumps(newer))
    assert isinstance(env.data, OrderData)
    assert env.data.amount == Decimal("5.00")
    assert env.data.items[0].sku == "s1"
    # A producer's own model still refuses what it does not know, naming the field.
    with pytest.raises(ValidationError, match="coupon"):
        Envelope.model_validate(newer)


def test_a_consumer_still_refuses_an_unknown_schema_version() -> None:
    with pytest.raises(ValidationError, match="schema_version"):
        Envelope.from_json(
            orjson.dumps(
                {
                    **BASE,
                    "schema_version": 2,
                    "event_type": "visit.recorded",
                    "data": {"visit_id": "v", "channel": "web"},
                }
            )
        )


def test_a_change_whose_event_carries_fields_outreach_does_not_know_is_read() -> None:
    event = {
        **BASE,
        "event_type": "order.paid",
        "trace": "t-1",
        "data": {
            "order_id": "o1",
            "status": "paid",
            "amount": "5.00",
            "currency": "USD",
            "coupon": "SPRING",
        },
    }
    raw = orjson.dumps(
        {
            "change_id": "ch-1",
            "customer_id": "c1",
            "cause": "event",
            "at": "2026-01-01T00:00:02Z",
            "event": event,
            "card": {"customer_id": "c1", "stage": "new"},
            "stage_change": {"from": "prospect", "to": "new", "at": "2026-01-01T00:00:02Z"},
            "region": "eu",
        }
    )
    for change in (Change.from_json(raw), read_change(raw)):
        assert change.event is not None and isinstance(change.event.data, OrderData)
        assert change.event.data.amount == Decimal("5.00")
        assert change.card["stage"] == "new"


def test_the_profile_schema_states_what_its_validators_check() -> None:
    """Each profile field's own check is in the JSON Schema too, so a client (and
    schemathesis) sees it: the patterns refuse what the validators refuse."""
    schema = CustomerData.model_json_schema()
    samples = {
        "email": ["ada@example.com", "ada@example.com\n", "a\x1cb@example.com", "no-at"],
        "phone": ["+33 6 12 34 56 78", "call me", "1234\n"],
        "locale": ["en-US", "english please"],
        "country": ["CN", "TW", "China", "cn", "EU"],
        "timezone": ["Europe/Paris", "Mars/Base"],
        "birthday": ["1990-04-17", "1800-01-01"],
        "name": ["Ada", "A\x00da"],
    }
    for field, values in samples.items():
        validator = jsonschema_rs.validator_for(schema["properties"][field])
        for value in values:
            try:
                CustomerData.model_validate({field: value})
                accepted = True
            except ValidationError:
                accepted = False
            assert validator.is_valid(value) == accepted, (field, value)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        ("70", "70.00"),
        ("70.0000", "70.00"),
        ("70.1", "70.10"),
        ("70.125", "70.125"),
        ("1E+3", "1000.00"),
        ("0", "0.00"),
        ("123.4500", "123.45"),
    ],
)
def test_money_is_written_one_way_everywhere(amount: str, text: str) -> None:
    assert money_text(Decimal(amount)) == text
