"""Membership triggers: a rule on "welcome to gold" acts once per membership episode."""

from __future__ import annotations

from typing import Any

import pytest

from services.outreach.core.conditions import validate
from services.outreach.core.preview import audience
from services.outreach.core.rules import RuleSet
from tests.unit.test_rules import card, errors_of, match_change, raw_rule, rule

GOLD_SINCE = "2025-05-20T17:45:00Z"


def member(tier: str | None, previous: str | None, direction: str | None, **more: Any) -> Any:
    m = {**card()["membership"], "tier": tier, "previous": previous, "direction": direction}
    return card(membership=m | more)


def change(c: dict[str, Any]) -> dict[str, Any]:
    return {"customer_id": "c1", "event": None, "card": c}


def occurrences(ruleset: RuleSet, c: dict[str, Any]) -> list[str]:
    return [m.occurrence for m in match_change(ruleset, change(c))]


WELCOME = {"type": "membership", "to": ["gold"], "direction": "upgrade"}


def test_an_upgrade_to_gold_fires_with_the_episode_as_occurrence() -> None:
    ruleset = RuleSet([rule(trigger=WELCOME)])
    assert occurrences(ruleset, member("gold", "silver", "upgrade")) == [
        f"membership:gold@{GOLD_SINCE}"
    ]


def test_every_change_within_the_episode_has_one_key_and_a_new_episode_another() -> None:
    ruleset = RuleSet([rule(trigger=WELCOME)])
    gold = member("gold", "silver", "upgrade")
    # Another order within gold: the same card episode, so the same occurrence (the ledger's
    # unique key lets it act once).
    richer = {**gold, "value": {**gold["value"], "orders": 15}}
    assert occurrences(ruleset, gold) == occurrences(ruleset, richer)
    again = member("gold", "silver", "upgrade", since="2026-07-01T10:00:00Z")
    assert occurrences(ruleset, again) == ["membership:gold@2026-07-01T10:00:00Z"]


@pytest.mark.parametrize(
    ("trigger", "card_args", "fires"),
    [
        (WELCOME, ("gold", "platinum", "downgrade"), False),
        (WELCOME, ("silver", None, "upgrade"), False),
        ({"type": "membership", "from": ["platinum"]}, ("gold", "platinum", "downgrade"), True),
        ({"type": "membership", "from": ["platinum"]}, ("gold", "silver", "upgrade"), False),
        ({"type": "membership", "direction": "downgrade"}, (None, "silver", "downgrade"), True),
        ({"type": "membership", "to": ["gold"]}, ("gold", None, "upgrade"), True),
    ],
)
def test_membership_triggers(
    trigger: dict[str, Any], card_args: tuple[str | None, str | None, str], fires: bool
) -> None:
    ruleset = RuleSet([rule(trigger=trigger)])
    assert bool(occurrences(ruleset, member(*card_args))) is fires


def test_a_card_without_a_membership_episode_fires_nothing() -> None:
    ruleset = RuleSet([rule(trigger={"type": "membership"})])
    assert occurrences(ruleset, card(membership=None)) == []
    assert occurrences(ruleset, member(None, None, None, since=None)) == []


def test_a_tier_the_backend_sets_is_no_episode() -> None:
    # Its `since` moves with every profile write that repeats it: no rule may key on it.
    ruleset = RuleSet([rule(trigger={"type": "membership"})])
    assert occurrences(ruleset, member("gold", None, None, source="backend")) == []


def test_entered_within_days_keeps_old_upgrades_out() -> None:
    ruleset = RuleSet([rule(trigger={**WELCOME, "entered_within_days": 30})])
    assert occurrences(ruleset, member("gold", "silver", "upgrade"))  # as_of 2025-06-01
    old = member("gold", "silver", "upgrade", since="2024-01-01T00:00:00Z")
    assert occurrences(ruleset, old) == []


def test_a_bad_membership_trigger_names_its_field() -> None:
    errors = errors_of(raw_rule(trigger={"type": "membership", "direction": "sideways"}))
    assert list(errors) == ["trigger.membership.direction"]


def test_conditions_and_previews_read_the_membership_section() -> None:
    assert validate({"eq": ["membership.direction", "upgrade"]}) == []
    assert validate({"eq": ["membership.direction", "sideways"]}) != []
    holds = audience(rule(trigger=WELCOME))
    assert holds(member("gold", "silver", "upgrade"))
    assert not holds(member("silver", None, "upgrade"))
