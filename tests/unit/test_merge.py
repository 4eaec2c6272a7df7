"""Folding merged customers into a survivor, and how identifiers compare: pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.scoring.core.identities import Ident, identifiers_of, name_likeness, search_values
from services.scoring.core.merge import fold
from services.scoring.core.state import DAY_US, CustomerState, apply
from services.scoring.settings import ScoringSettings
from services.scoring.shell.identities import BatchIdentities
from shared.events import Envelope

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = ScoringSettings()
RETENTION = SETTINGS.visit_retention_days * DAY_US


def _event(
    cid: str, eid: str, kind: str, at: datetime, data: dict[str, Any], **more: Any
) -> Envelope:
    return Envelope.model_validate(
        {
            "event_id": eid,
            "event_type": kind,
            "customer_id": cid,
            "occurred_at": at,
            "received_at": at,
            "source": "test",
            "data": data,
            **more,
        }
    )


def _state(cid: str, *events: Envelope) -> CustomerState:
    state = CustomerState(cid)
    for e in events:
        state, _ = apply(state, e, SETTINGS)
    return state


def _order(cid: str, eid: str, order_id: str, at: datetime, amount: str = "10") -> Envelope:
    data = {"order_id": order_id, "status": "paid", "amount": amount, "currency": "USD"}
    return _event(cid, eid, "order.paid", at, data)


def test_a_fold_is_the_union_of_both_customers_facts_and_counts_a_shared_fact_once() -> None:
    web = _state(
        "web", _order("web", "e1", "o1", T0), _order("web", "e2", "o2", T0 + timedelta(days=3))
    )
    store = _state(
        "store",
        _order("store", "e2", "o2", T0 + timedelta(days=3)),
        _order("store", "e3", "o3", T0 + timedelta(days=9)),
    )
    out = fold("web", web, [store], RETENTION)
    assert sorted(out.orders) == ["o1", "o2", "o3"]
    assert out.customer_id == "web"
    assert out.last_event_at == store.last_event_at
    assert sorted(web.orders) == ["o1", "o2"]  # the states given are left as they were
    # Idempotent: folding the same facts again changes nothing.
    assert fold("web", out, [store], RETENTION) == out
    # A survivor never seen before is the merged customer's facts under its id.
    assert sorted(fold("new", None, [store], RETENTION).orders) == ["o2", "o3"]


def test_the_profile_takes_the_newest_value_and_consent_the_most_restrictive() -> None:
    web = _state(
        "web",
        _event(
            "web",
            "p1",
            "customer.updated",
            T0,
            {"name": "Ada", "consent": {"email": True, "sms": False, "marketing": True}},
        ),
    )
    store = _state(
        "store",
        _event(
            "store",
            "p2",
            "customer.updated",
            T0 + timedelta(days=1),
            {"name": "Ada L.", "consent": {"email": False, "sms": True, "marketing": True}},
        ),
        _event("store", "u1", "customer.unsubscribed", T0 + timedelta(days=2), {"how": "link"}),
    )
    for out in (fold("web", web, [store], RETENTION), fold("web", store, [web], RETENTION)):
        values = dict(out.profile_values())
        assert values["name"] == "Ada L."
        assert (values["consent.email"], values["consent.sms"], values["consent.marketing"]) == (
            False,
            False,
            True,
        )
        assert values["consent.unsubscribed"] == {"how": "link"}
    # A later answer of the person still wins over the folded one.
    later = _event(
        "web",
        "p3",
        "customer.updated",
        T0 + timedelta(days=5),
        {"consent": {"email": True, "sms": True, "marketing": True}},
    )
    out, changed = apply(fold("web", web, [store], RETENTION), later, SETTINGS)
    assert changed and dict(out.profile_values())["consent.email"] is True


def test_visits_fold_into_one_window_and_older_ones_into_the_count() -> None:
    web = _state(
        "web", _event("web", "v1", "visit.recorded", T0, {"visit_id": "v1", "channel": "web"})
    )
    late = T0 + timedelta(days=SETTINGS.visit_retention_days + 5)
    store = _state(
        "store",
        _event("store", "v2", "visit.recorded", late, {"visit_id": "v2", "channel": "store"}),
    )
    out = fold("web", web, [store], RETENTION)
    assert list(out.visits) == ["v2"] and out.visits_older == 1


def test_identifiers_compare_in_one_spelling() -> None:
    e = _event(
        "c",
        "x",
        "customer.updated",
        T0,
        {"email": "Ada@Example.COM", "phone": "(202) 555-0143"},
        identifiers=[
            {"kind": "phone", "value": "+1 202 555 0143"},
            {"kind": "external", "value": "S-1", "source": "store"},
        ],
    )
    assert identifiers_of(e, "US") == {
        Ident("email", "", "ada@example.com"),
        Ident("phone", "", "+12025550143"),
        Ident("external", "store", "S-1"),
    }
    for written in ("202-555-0143", "+1 (202) 555 0143", "1 202 555 0143"):
        assert "+12025550143" in search_values(written, "US")
    assert name_likeness("Ada  LOVELACE", "ada lovelace") == 1.0
    assert (name_likeness("Ada Lovelace", "Bob Stone") or 0) < 0.5
    assert name_likeness(None, "Ada") is None


def test_a_batch_keeps_aliases_flat_and_forgets_what_it_learned_of_an_erased_person() -> None:
    ids = BatchIdentities({"k": "m"})  # k was merged into m before the batch
    assert ids.merge("m", ["a"], "e1") == ["a"]
    ids.learn("a", {Ident("email", "", "a@x.io")})
    # m is merged into s: m's aliases (k, a) are s's now; m's facts fold into s.
    assert ids.merge("s", ["m"], "e2") == ["m"]
    assert {c: ids.survivor(c) for c in "kams"} == {"k": "s", "a": "s", "m": "s", "s": "s"}
    assert ids.identifiers() == [("s", Ident("email", "", "a@x.io"))]
    # Merging an alias again changes nothing.
    assert ids.merge("s", ["a", "s"], "e3") == []
    ids.forget("s")
    assert ids.identifiers() == []
