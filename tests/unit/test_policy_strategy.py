"""The policy's strategy parts: reduce cost receives no promotions, promotions kept in
proportion with service (the balance), the global control group's kinds and contact costs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from services.outreach.core.policy import (
    Balance,
    Outcome,
    Policy,
    Reason,
    balance_frees_at,
    history_days,
)
from services.outreach.core.rules import Limits
from tests.unit.test_policy import NOON_PARIS, cand, card, go, sent

PROMOTIONAL = Policy().promotional_kinds
BALANCED = Policy(balance=Balance(promotions_per_service=2, days=30), frequency_cap=None)


def of(strategy: str | None, **kw: Any) -> dict[str, Any]:
    return {**card(**kw), "strategy": strategy}


# --- reduce cost ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["recall", "winback", "announcement"])
def test_reduce_cost_customers_receive_no_promotions(kind: str) -> None:
    decision = go(of("reduce_cost"), cand(kind))
    assert (decision.outcome, decision.reason) == (Outcome.SUPPRESS, Reason.REDUCE_COST)
    # Other strategies, and none yet, are not held back.
    for strategy in ("develop", "maintain", "nurture", None):
        assert go(of(strategy), cand(kind)).outcome is Outcome.SEND


@pytest.mark.parametrize("kind", ["greeting", "follow_up", "care", "apology"])
def test_reduce_cost_customers_still_get_service(kind: str) -> None:
    assert go(of("reduce_cost"), cand(kind)).outcome is Outcome.SEND


def test_reduce_cost_is_a_policy_switch_and_consent_comes_first() -> None:
    relaxed = Policy(reduce_cost_no_promotions=False)
    assert go(of("reduce_cost"), cand("recall"), policy=relaxed).outcome is Outcome.SEND
    no_consent = go(of("reduce_cost", marketing=False), cand("recall"))
    assert no_consent.reason is Reason.NO_CONSENT


# --- the balance (pure) ---------------------------------------------------------------------


def at(days_ago: float, kind: str) -> tuple[datetime, str, str]:
    return (NOON_PARIS - timedelta(days=days_ago), kind, "x")


BAL = Balance(promotions_per_service=2, days=30)


@pytest.mark.parametrize(
    ("history", "allowed"),
    [
        ([], True),  # the + 1: a first promotion goes before any service
        ([at(1, "recall")], True),  # 1 < 2 * (0 + 1)
        ([at(1, "recall"), at(2, "winback")], False),  # 2 < 2 is false
        ([at(1, "recall"), at(2, "winback"), at(3, "greeting")], True),  # 2 < 2 * 2
        ([at(1, "recall"), at(2, "winback"), at(3, "care")], True),  # care is service
        ([at(1, "recall"), at(2, "winback"), at(3, "team")], False),  # a team alert is not
        ([at(1, "recall"), at(2, "winback"), at(3, "control")], False),  # nor a held-out one
        ([at(1, "recall"), at(2, "winback"), at(3, "apology")], False),  # nor an apology
        ([at(1, "recall"), at(31, "winback")], True),  # out of the window
    ],
)
def test_the_balance_rule(history: list[tuple[datetime, str, str]], allowed: bool) -> None:
    free = balance_frees_at(history, BAL, PROMOTIONAL, NOON_PARIS)
    assert (free == NOON_PARIS) is allowed


def test_over_the_ratio_waits_until_a_promotion_leaves_the_window() -> None:
    # Promotions 10 and 20 days ago, no service: the older leaves in 10 days.
    history = [at(10, "recall"), at(20, "winback")]
    assert balance_frees_at(history, BAL, PROMOTIONAL, NOON_PARIS) == NOON_PARIS + timedelta(10)
    # A service contact planned in 3 days lets it through then.
    planned = (NOON_PARIS + timedelta(days=3), "follow_up", "x")
    assert balance_frees_at([*history, planned], BAL, PROMOTIONAL, NOON_PARIS) == (
        NOON_PARIS + timedelta(days=3)
    )


def test_a_service_leaving_the_window_counts_too() -> None:
    # Promotions 25, 26, 27 and 1 days ago, a greeting 28 days ago: 4 < 2 * (1 + 1) fails.
    # In 3 days the 27-day-old promotion leaves (3 < 4 would pass), but the greeting left a
    # day earlier (3 < 2 fails); in 4 days 2 < 2 fails; in 5 days 1 < 2 passes.
    history = [at(25, "recall"), at(26, "recall"), at(27, "recall"), at(1, "winback")]
    history.append(at(28, "greeting"))
    assert balance_frees_at(history, BAL, PROMOTIONAL, NOON_PARIS) == NOON_PARIS + timedelta(5)


# --- the balance in decide ------------------------------------------------------------------


def test_a_promotion_over_the_ratio_is_deferred_with_reason_balance() -> None:
    history = [sent(10, "recall"), sent(20, "winback")]
    decision = go(candidate=cand("recall"), history=history, policy=BALANCED)
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.BALANCE)
    assert decision.until == NOON_PARIS + timedelta(days=10)
    # With a greeting in the window it goes now; service kinds are never weighed.
    served = [*history, sent(5, "greeting")]
    assert go(candidate=cand("recall"), history=served, policy=BALANCED).outcome is Outcome.SEND
    assert go(candidate=cand("greeting"), history=history, policy=BALANCED).outcome is (
        Outcome.SEND
    )
    # Off by default.
    assert go(candidate=cand("recall"), history=history).outcome is Outcome.SEND


def test_the_balance_comes_after_the_open_complaint_hold_and_before_the_cap() -> None:
    history = [sent(10, "recall"), sent(20, "winback")]
    held = go(card(open_complaints=1), cand("recall"), history, policy=BALANCED)
    assert held.outcome is Outcome.HOLD
    # With the cap on (2 per 7 days), the cap is judged at the instant the balance allows:
    # promotions 1, 10 and 20 days ago and none of service fail the ratio until a follow-up
    # planned in 3 days; then the cap is full (the promotion of a day ago and the follow-up)
    # until the promotion of a day ago is 7 days old, in 6 days.
    capped = Policy(balance=BAL)
    planned = [sent(1, "recall"), *history, sent(-3, "follow_up")]
    decision = go(candidate=cand("recall"), history=planned, policy=capped)
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.BALANCE)
    assert decision.until == NOON_PARIS + timedelta(days=6)
    # A deferral landing in quiet hours moves to their end (08:00 in Paris).
    night = [sent(10, "recall"), sent(20.5, "winback")]
    late = go(candidate=cand("recall"), history=night, policy=BALANCED)
    assert late.until == datetime(2025, 6, 12, 6, tzinfo=UTC)


def test_history_days_covers_the_balance_window() -> None:
    assert history_days(Limits(), BALANCED) == 60


# --- settings ---------------------------------------------------------------------------------


def test_the_strategy_settings_are_validated() -> None:
    # A transactional kind always goes, even listed for the global control group.
    listed = Policy(global_control_kinds=frozenset({"greeting", "apology"}))
    assert listed.held_out_kinds == {"greeting"}
    with pytest.raises(ValidationError, match="service and promotional"):
        Policy(balance=Balance(service_kinds=frozenset({"greeting", "recall"})))
    with pytest.raises(ValidationError, match="decimal string"):
        Policy.model_validate({"contact_cost": {"email": 0.002}})
    # What the schema states (digits, at most 1000, six decimals) is exactly what is taken.
    for refused in ("-1", "0.0000001", "1000.01", "9710", "1e2", " 1", "+1"):
        with pytest.raises(ValidationError, match="from 0 to 1000"):
            Policy.model_validate({"contact_cost": {"email": refused}})
    assert Policy.model_validate({"contact_cost": {"webhook": "1000"}}).contact_cost.webhook == 1000
    with pytest.raises(ValidationError, match="Extra inputs"):
        Policy.model_validate({"contact_cost": {"fax": "0.05"}})
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Policy.model_validate({"balance": {"promotions_per_service": 0, "days": 30}})


def test_contact_costs_are_decimal_strings_with_defaults() -> None:
    policy = Policy.model_validate({"contact_cost": {"webhook": "0.05"}})
    assert policy.contact_cost.of("webhook") == Decimal("0.05")
    assert policy.contact_cost.of("email") == Decimal("0.002")
    dumped = policy.model_dump(mode="json")
    assert dumped["contact_cost"] == {"email": "0.002", "webhook": "0.05", "sms": "0.05"}
    assert Policy.model_validate(dumped) == policy
    assert dumped["balance"] is None and dumped["reduce_cost_no_promotions"] is True
    assert sorted(dumped["global_control_kinds"]) == [
        "announcement",
        "greeting",
        "recall",
        "winback",
    ]
