"""Tags from behaviour, the pure parts: the ``tag`` action's shape, what it tells scoring, the
guards that keep tag rules from looping, and scoring's registers for the tags rules set."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from services.outreach.core.rules import Match, Rule, template_errors
from services.outreach.core.tagging import MAX_DEPTH, NO_CAUSE, Cause, may_fire, tag_event
from services.scoring.core.card import Population, build_card
from services.scoring.core.state import CustomerState, apply
from services.scoring.settings import ScoringSettings
from shared.events import Envelope, EventType, TagData

NOW = datetime(2026, 6, 1, 10, tzinfo=UTC)


def tag_rule(rule_id: str = "tagger", **action: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": rule_id,
        "trigger": {"type": "event", "event": "order.paid"},
        "action": {"kind": "tag", **action},
    }


def errors_of(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as raised:
        Rule.model_validate(raw)
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in raised.value.errors()}


def test_a_tag_action_carries_tags_and_no_message() -> None:
    rule = Rule.model_validate(tag_rule(tags={"add": ["vip"], "remove": ["new"]}))
    assert rule.action.is_tag
    assert template_errors(rule) == []
    # As stored and shown: no channel, no template.
    dumped = rule.model_dump(mode="json")
    assert dumped["action"] == {"kind": "tag", "tags": {"add": ["vip"], "remove": ["new"]}}
    assert Rule.model_validate(dumped) == rule


@pytest.mark.parametrize(
    ("action", "says"),
    [
        ({}, "a tag action needs tags"),
        ({"tags": {"add": [], "remove": []}}, "at least one tag"),
        ({"tags": {"add": ["a"], "remove": ["a"]}}, "not both: a"),
        (
            {"tags": {"add": ["a"]}, "channel": "email", "template": {"body": "x"}},
            "sends no message: no channel, template",
        ),
        ({"tags": {"add": ["a b"]}}, "String should match pattern"),
    ],
)
def test_a_bad_tag_action_is_refused_saying_why(action: dict[str, Any], says: str) -> None:
    errors = errors_of(tag_rule(**action))
    assert any(field.startswith("action") for field in errors), errors
    assert any(says in message for message in errors.values()), errors


def test_a_message_action_has_no_tags_and_a_tag_action_no_control_group() -> None:
    raw = tag_rule(tags={"add": ["a"]})
    raw["control_percent"] = 10.0
    assert "control_percent" in errors_of(raw)
    assert "limits" in errors_of({**tag_rule(tags={"add": ["a"]}), "limits": {"once": True}})
    message = {
        "kind": "greeting",
        "channel": "webhook",
        "template": {"body": "hi"},
        "tags": {"add": ["a"]},
    }
    assert "only a tag action" in " ".join(errors_of({**raw, "action": message}).values())


def match(rule_id: str = "tagger", occurrence: str = "ev-1", **tags: list[str]) -> Match:
    rule = Rule.model_validate(tag_rule(rule_id, tags=tags))
    return Match(rule, "c1", occurrence)


def test_a_tag_event_says_only_what_changes_the_card() -> None:
    card = {"as_of": NOW.isoformat(), "rule_tags": ["vip"], "tags": ["newsletter", "vip"]}
    event = tag_event(match(add=["vip", "big"], remove=["gone"]), card, NOW)
    assert event is not None
    assert event.event_type is EventType.CUSTOMER_TAGGED
    assert isinstance(event.data, TagData)
    assert (event.data.add, event.data.remove, event.data.depth) == (["big"], [], 0)
    # Already so: nothing to tell (a rule adding the tag it is conditioned on is idle).
    assert tag_event(match(add=["vip"]), card, NOW) is None
    assert tag_event(match(remove=["absent"]), card, NOW) is None
    # A backend's tag is not a rule's: a rule still sets it as its own.
    assert tag_event(match(add=["newsletter"]), card, NOW) is not None
    # The same change seen again is the same event; another card's is another.
    once, again = (tag_event(match(add=["big"]), card, NOW) for _ in range(2))
    later = {**card, "as_of": (NOW + timedelta(hours=1)).isoformat()}
    other = tag_event(match(add=["big"]), later, NOW)
    assert once is not None and again is not None and other is not None
    assert once.event_id == again.event_id != other.event_id


def test_tag_chains_stop_at_their_own_rule_and_at_the_bound() -> None:
    m = match("a", add=["x"])
    assert may_fire(m, NO_CAUSE)
    assert not may_fire(m, Cause("a", 0))  # the change its own tagging made
    assert may_fire(m, Cause("b", MAX_DEPTH - 2))
    assert not may_fire(m, Cause("b", MAX_DEPTH - 1))
    event = tag_event(match("a", add=["x"]), {"rule_tags": []}, NOW, Cause("b", 1))
    assert event is not None and isinstance(event.data, TagData) and event.data.depth == 2


def tagged(event_id: str, minutes: int, **data: Any) -> Envelope:
    at = NOW + timedelta(minutes=minutes)
    return Envelope(
        event_id=event_id,
        event_type=EventType.CUSTOMER_TAGGED,
        customer_id="c1",
        occurred_at=at,
        received_at=at,
        source="outreach",
        data=TagData(rule_id="r", **data),
    )


def profile(event_id: str, minutes: int, tags: list[str]) -> Envelope:
    at = NOW + timedelta(minutes=minutes)
    return Envelope.model_validate(
        {
            "event_id": event_id,
            "event_type": "customer.updated",
            "customer_id": "c1",
            "occurred_at": at,
            "received_at": at,
            "source": "test",
            "data": {"tags": tags},
        }
    )


def test_scoring_keeps_rule_tags_apart_and_in_any_arrival_order() -> None:
    settings = ScoringSettings()
    events = [
        profile("p1", 0, ["newsletter", "vip"]),
        tagged("t1", 1, add=["vip", "big"]),
        tagged("t2", 2, add=["first"], remove=["big"]),
        profile("p2", 3, ["newsletter"]),  # the backend replaces its list whole
    ]
    cards = set()
    for order in itertools.permutations(events):
        state: CustomerState | None = None
        for e in (*order, order[0]):  # and a duplicate
            state, _ = apply(state, e, settings)
        assert state is not None
        card = build_card(state, NOW + timedelta(hours=1), Population(), settings)
        cards.add((tuple(card.profile.tags), tuple(card.tags), tuple(card.rule_tags)))
    assert cards == {(("newsletter",), ("newsletter", "first", "vip"), ("first", "vip"))}
