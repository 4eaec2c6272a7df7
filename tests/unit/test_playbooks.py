"""The default pack's strategy playbooks: each strategy's rules reach that strategy's customers
only, each holds out a control group and is measured by a goal, maintain offers no discount,
and reduce cost gets no message at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.outreach.core.arms import arm_of
from services.outreach.core.rule_pack import PLAYBOOK_STRATEGY, default_pack
from services.outreach.core.rules import RuleSet
from services.outreach.core.schedules import next_due
from tests.unit.test_rules import card, change, match_broadcast, match_change

PACK = {r.id: r for r in default_pack()}
RULES = RuleSet(default_pack())
STRATEGIES = ("develop", "maintain", "nurture", "reduce_cost")


def test_every_strategy_but_reduce_cost_has_a_playbook_with_control_groups_and_goals() -> None:
    assert set(PLAYBOOK_STRATEGY.values()) == {"develop", "maintain", "nurture"}
    for rule_id, strategy in PLAYBOOK_STRATEGY.items():
        rule = PACK[rule_id]
        assert rule.control_percent == 20, rule_id
        assert rule.goal is not None and rule.measured_goal.within_days, rule_id
        assert strategy in str(rule.conditions), rule_id
    # Maintain: service and thanks, never a discount.
    assert all(
        PACK[r].action.offer is None for r, s in PLAYBOOK_STRATEGY.items() if s == "maintain"
    )
    # Develop rewards loyalty without a discount; nurture's incentives are discounts.
    assert all(
        (PACK[r].action.offer is not None) and PACK[r].action.offer.discount is None  # type: ignore[union-attr]
        for r, s in PLAYBOOK_STRATEGY.items()
        if s == "develop"
    )


def test_the_win_back_holds_out_a_tenth_of_the_churned_customers_it_matches() -> None:
    # The pack's one discount to customers who may come back anyway: without a hold-out its
    # outcomes could only be read against the model's forecast.
    winback = PACK["winback-churned"]
    c = card(tier="key", as_of="2025-06-01T08:00:00Z")
    assert winback.id in {
        m.rule.id for m in match_change(RULES, change(moved=("declining", "churned"), c=c))
    }
    arms = [
        arm_of(
            winback.id,
            f"c{n}",
            kind=winback.action.kind,
            audience=winback.action.audience,
            control_percent=winback.control_percent,
            global_percent=0,
            global_kinds=frozenset(),
        )
        for n in range(4000)
    ]
    assert 0.08 < arms.count("control") / len(arms) < 0.12
    assert arms.count("control") + arms.count("treatment") == len(arms)


def strategy_card(strategy: str, **more: object) -> dict[str, object]:
    return card(strategy=strategy, **more)


@pytest.mark.parametrize(
    ("was", "now", "expected"),
    [
        ("develop", "develop", {"develop-loyalty-thanks"}),
        # A valued customer gone quiet: the order that brings them back makes them develop.
        ("maintain", "develop", {"maintain-thanks"}),
        ("maintain", "maintain", {"maintain-thanks"}),
        ("nurture", "nurture", set()),
        ("reduce_cost", "reduce_cost", set()),
        (None, "develop", {"develop-loyalty-thanks"}),  # their first news: no card before
        (None, "maintain", set()),
    ],
)
def test_a_paid_order_is_answered_by_the_playbook_of_what_the_customer_was_when_they_ordered(
    was: str | None, now: str, expected: set[str]
) -> None:
    c = strategy_card(now, value={**card()["value"], "orders": 4})
    before = strategy_card(was, value={**card()["value"], "orders": 3}) if was else None
    fired = {m.rule.id for m in match_change(RULES, change("order.paid", c=c), before)}
    assert {r for r in fired if r in PLAYBOOK_STRATEGY} == expected


@pytest.mark.parametrize(
    ("strategy", "moved", "expected"),
    [
        ("develop", ("growing", "mature"), {"develop-early-access"}),
        ("develop", ("mature", "declining"), {"develop-check-in"}),
        ("maintain", ("mature", "declining"), {"maintain-check-in"}),
        ("nurture", ("new", "growing"), {"nurture-guide"}),
        ("nurture", ("churned", "reactivated"), {"nurture-guide"}),
        ("develop", ("new", "growing"), set()),
        ("reduce_cost", ("mature", "declining"), set()),
    ],
)
def test_stage_playbooks(strategy: str, moved: tuple[str, str], expected: set[str]) -> None:
    c = strategy_card(strategy, as_of="2025-06-01T08:00:00Z")
    fired = {m.rule.id for m in match_change(RULES, change(moved=moved, c=c))}
    assert {r for r in fired if r in PLAYBOOK_STRATEGY} == expected


def test_stage_playbooks_do_not_reach_customers_who_moved_long_ago() -> None:
    c = strategy_card("develop", as_of="2026-06-01T08:00:00Z")  # a year after stage_since
    fired = {m.rule.id for m in match_change(RULES, change(moved=("growing", "mature"), c=c))}
    assert "develop-early-access" not in fired


def test_the_maintain_thank_you_note_skips_the_longest_silent() -> None:
    note = PACK["maintain-thank-you-note"]
    rfm = card()["rfm"]
    recent = strategy_card("maintain", rfm={**rfm, "recency": 2})
    assert match_broadcast(RULES, note, recent, "year-end") is not None
    silent = strategy_card("maintain", rfm={**rfm, "recency": 1})
    assert match_broadcast(RULES, note, silent, "year-end") is None
    assert match_broadcast(RULES, note, strategy_card("develop"), "year-end") is None


def test_the_second_order_incentive_comes_three_weeks_after_a_first_order_only() -> None:
    rule = PACK["nurture-second-order"]
    first = datetime(2026, 5, 1, 15, tzinfo=UTC)
    value = {**card()["value"], "orders": 1, "first_order_at": first.isoformat()}
    c = strategy_card("nurture", value=value)
    due = next_due(rule, c, first)
    assert due is not None and due.date() == (first + timedelta(days=21)).date()
    assert RULES.conditions_hold(rule, c)
    assert not RULES.conditions_hold(rule, strategy_card("nurture"))  # 14 orders already
    # A first order years ago is past the schedule's catch-up: never due.
    assert next_due(rule, c, first + timedelta(days=400)) is None
