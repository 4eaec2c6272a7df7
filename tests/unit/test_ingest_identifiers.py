"""Ingest's identifiers, pure: how they are read, where they travel, and which customers a
batch's verified identifiers join."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from services.ingest.identity import Carried, _groups, map_key
from services.ingest.intake import prepare
from services.ingest.schemas import CustomerIn, VisitIn
from shared.events import Envelope

NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def _visit(**kw: object) -> VisitIn:
    base: dict[str, object] = {
        "visit_id": "v1",
        "customer_id": "c1",
        "occurred_at": NOW,
        "channel": "web",
    }
    return VisitIn.model_validate({**base, **kw})


@pytest.mark.parametrize("phone", ["(201) 555-0123", "201-555-0123", "201.555.0123"])
def test_national_formats_of_one_phone_read_as_one_e164_number(phone: str) -> None:
    [identifier] = _visit(identifiers=[{"kind": "phone", "value": phone}]).identifiers
    assert identifier.value == "+12015550123"


def test_an_email_is_compared_lower_cased_and_an_external_id_needs_its_source() -> None:
    [email] = _visit(identifiers=[{"kind": "email", "value": " Ada@Example.COM"}]).identifiers
    assert email.value == "ada@example.com"
    with pytest.raises(ValidationError) as caught:
        _visit(
            identifiers=[
                {"kind": "phone", "value": "12"},
                {"kind": "external", "value": "loyalty-1"},
                {"kind": "email", "value": "not-an-email"},
            ]
        )
    assert {e["loc"] for e in caught.value.errors()} == {
        ("identifiers", 0, "value"),
        ("identifiers", 1, "source"),
        ("identifiers", 2, "value"),
    }


def test_identifiers_travel_beside_the_payload_and_a_profile_contact_counts_as_one() -> None:
    item = CustomerIn.model_validate(
        {
            "customer_id": "c1",
            "occurred_at": NOW,
            "email": "Ada@Example.com",
            "phone": "201 555 0123",
            "identifiers": [{"kind": "email", "value": "ada@example.com", "verified": True}],
        }
    )
    p = prepare(item, header_key=None, source="shop", received_at=NOW)
    envelope = Envelope.from_json(p.value)
    assert "identifiers" not in orjson.loads(p.value)["data"]
    assert [(i.kind, i.value, i.verified) for i in envelope.identifiers] == [
        ("email", "ada@example.com", True),
        ("phone", "+12015550123", False),
    ]
    assert p.identifiers == (
        (("email", "", "ada@example.com"), True),
        (("phone", "", "+12015550123"), False),
    )


def test_an_event_without_identifiers_hashes_as_before_they_existed() -> None:
    p = prepare(_visit(), header_key=None, source="shop", received_at=NOW)
    sent: dict[str, object] = {"customer_id": "c1", "occurred_at": "2026-11-20T10:00:00Z"}
    sent |= {"visit_id": "v1", "channel": "web", "duration_seconds": None}
    assert (
        p.payload_hash
        == hashlib.sha256(orjson.dumps(sent, option=orjson.OPT_SORT_KEYS)).hexdigest()
    )
    assert "identifiers" not in orjson.loads(p.value)


def test_an_event_for_a_merged_customer_goes_under_the_survivor_naming_whom_it_was_for() -> None:
    p = prepare(_visit(), header_key=None, source="shop", received_at=NOW).addressed("c0")
    envelope = Envelope.from_json(p.value)
    assert (p.customer_id, envelope.customer_id, envelope.addressed_to) == ("c0", "c0", "c1")


def test_only_external_ids_are_told_apart_by_source() -> None:
    assert map_key("email", "web", "a@b.c") == ("email", "", "a@b.c")
    assert map_key("external", "store", "42") == ("external", "store", "42")


def test_customers_sharing_a_verified_identifier_with_its_owner_are_one_group() -> None:
    email, phone = ("email", "", "a@b.c"), ("phone", "", "+12015550123")
    auto = [
        Carried("store", email, True),
        Carried("app", phone, True),
        Carried("kiosk", phone, True),  # nobody owned the phone: app (first) owns it
        Carried("web", email, True),  # the owner itself: nothing to join
    ]
    groups = _groups(auto, {email: "web"}, {"store": "store", "app": "app", "kiosk": "kiosk"})
    assert sorted((sorted(g), k) for g, k in groups) == [
        (["app", "kiosk"], phone),
        (["store", "web"], email),
    ]


def test_a_profile_with_as_many_identifiers_as_an_envelope_carries_stays_a_valid_envelope() -> None:
    many = [{"kind": "external", "source": "web", "value": f"w-{n}"} for n in range(20)]
    item = CustomerIn.model_validate(
        {"customer_id": "c1", "email": "ada@example.com", "identifiers": many}
    )
    p = prepare(item, header_key=None, source="shop", received_at=NOW)
    assert len(Envelope.model_validate_json(p.value).identifiers) == 20
