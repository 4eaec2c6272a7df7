"""The event envelope: what every consumer of crm.customer-events.v1 relies on."""

from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

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
