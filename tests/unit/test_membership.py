"""Membership tiers: computed from the last 365 days, upgraded by an order, lowered by time,
overridden by the backend, and published as a change of their own."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from pydantic import ValidationError

from services.scoring.core.card import Population, build_card, score
from services.scoring.core.changes import event_change, time_change
from services.scoring.core.membership import tier_of
from services.scoring.core.state import CustomerState
from services.scoring.settings import MembershipTier, ScoringSettings
from shared.card import Card
from shared.changes import Change
from shared.events import Envelope
from tests.unit.test_state import Events, day, fold

TIERS = (
    MembershipTier(name="silver", min_spend_365d=Decimal(300)),
    MembershipTier(name="gold", min_spend_365d=Decimal(1000), min_orders_365d=5),
)
SETTINGS = ScoringSettings(membership_tiers=TIERS)
POP = Population()


def card_at(state: CustomerState, at: datetime, settings: ScoringSettings = SETTINGS) -> Card:
    return build_card(state, at, POP, settings)


def orders(*items: tuple[float, str]) -> tuple[Events, list[Envelope]]:
    ev = Events()
    return ev, [ev.order("paid", f"o-{i}", amount, day(d)) for i, (d, amount) in enumerate(items)]


def test_the_highest_tier_reached_by_spend_or_by_orders() -> None:
    assert tier_of(Decimal(299), 1, TIERS) == (-1, None)
    assert tier_of(Decimal(300), 1, TIERS) == (0, "spend_365d")
    assert tier_of(Decimal(1000), 1, TIERS) == (1, "spend_365d")
    assert tier_of(Decimal(10), 5, TIERS) == (1, "orders_365d")


def test_a_tier_needs_a_threshold_and_names_are_unique() -> None:
    with pytest.raises(ValidationError, match="min_spend_365d"):
        MembershipTier(name="gold")
    with pytest.raises(ValidationError, match="name of its own"):
        ScoringSettings(membership_tiers=(TIERS[0], TIERS[0]))


def test_crossing_the_gold_threshold_upgrades_since_that_order() -> None:
    _, events = orders((0, "400.00"), (10, "700.00"), (20, "50.00"))
    state = fold(events)
    card = card_at(state, day(30))
    m = card.membership
    assert m is not None
    assert card.profile.member_tier == "gold"
    assert (m.tier, m.source, m.previous, m.direction) == ("gold", "computed", "silver", "upgrade")
    assert m.since == day(10)  # the order that crossed it, not the later one
    assert m.basis == "spend_365d" and m.spend_365d == Decimal("1150.00") and m.next is None


def test_below_every_tier_the_card_says_what_is_missing_for_the_first() -> None:
    _, events = orders((0, "120.00"))
    m = card_at(fold(events), day(5)).membership
    assert m is not None and m.tier is None and m.since is None and m.direction is None
    assert m.next is not None
    assert (m.next.tier, m.next.missing_spend, m.next.missing_orders) == (
        "silver",
        Decimal("180.00"),
        None,
    )


def test_time_lowers_the_tier_as_the_years_spend_falls_and_the_sweep_is_told_when() -> None:
    _, events = orders((0, "800.00"), (100, "400.00"))
    state = fold(events)
    at_gold = score(state, day(300), POP, SETTINGS)
    assert at_gold.member_tier == "gold" and at_gold.stage == "churned"
    # The first purchase leaves the window 365 days on: the sweep is due then, though the
    # stage will not move again.
    assert at_gold.next_transition_at is None and at_gold.review_at == day(365)
    later = card_at(state, day(366))
    m = later.membership
    assert m is not None
    assert (m.tier, m.previous, m.direction, m.since) == ("silver", "gold", "downgrade", day(365))
    assert m.next is not None and m.next.missing_spend == Decimal("600.00")
    assert m.next.missing_orders == 4
    gone = card_at(state, day(466)).membership
    assert gone is not None and gone.tier is None and gone.previous == "silver"


def test_a_member_tier_the_backend_sets_wins_until_it_clears_it() -> None:
    ev, events = orders((0, "1200.00"))
    events.append(ev("customer.updated", day(1), member_tier="vip-club"))
    state = fold(events)
    card = card_at(state, day(2))
    assert card.profile.member_tier == "vip-club"
    assert card.membership is not None
    assert (card.membership.source, card.membership.since) == ("backend", day(1))
    scored = score(state, day(2), POP, SETTINGS)
    assert scored.review_at == scored.next_transition_at  # the stage's alone
    events.append(ev("customer.updated", day(3), member_tier=None))
    card = card_at(fold(events), day(4))
    assert card.profile.member_tier == "gold"
    assert card.membership is not None and card.membership.source == "computed"


def test_without_tiers_configured_there_is_no_membership() -> None:
    _, events = orders((0, "5000.00"))
    card = card_at(fold(events), day(1), ScoringSettings())
    assert card.membership is None and card.profile.member_tier is None


def test_the_published_card_is_the_read_apis_card() -> None:
    _, events = orders((0, "800.00"), (100, "400.00"))
    state = fold(events)
    for at in (day(50), day(200), day(400)):
        published = orjson.loads(score(state, at, POP, SETTINGS).json)
        assert Card.model_validate(published) == card_at(state, at)


def test_an_upgrade_and_a_fall_are_published_as_membership_changes() -> None:
    _, events = orders((0, "800.00"), (100, "400.00"))
    state = fold(events)
    scored = score(state, day(100) + timedelta(hours=1), POP, SETTINGS)
    last = events[-1].model_dump_json().encode()
    _, raw = event_change(events[-1], last, scored, "new", "silver")
    change = Change.from_json(raw)
    assert change.membership_change is not None
    assert (change.membership_change.from_, change.membership_change.to) == ("silver", "gold")
    _, raw = event_change(events[-1], last, scored, "new", "gold")
    assert Change.from_json(raw).membership_change is None

    fallen = score(state, day(366), POP, SETTINGS)
    _, raw = time_change(fallen, fallen.stage, day(366), "gold")
    change = Change.from_json(raw)
    assert change.stage_change is None
    assert change.membership_change is not None
    assert (change.membership_change.from_, change.membership_change.to) == ("gold", "silver")
