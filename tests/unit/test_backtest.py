"""The backtest's replay (pure): fed a chunk at a time, each customer's changes in the order
recorded, it decides what one pass over the whole window decides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.outreach.core.arms import in_rule_control
from services.outreach.core.backtest import BacktestResult, Replay
from services.outreach.core.policy import Policy
from services.outreach.core.rules import Rule
from shared.changes import Change

START = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _rule(trigger: dict[str, Any]) -> Rule:
    return Rule.model_validate(
        {
            "id": "r",
            "name": "r",
            "trigger": trigger,
            "action": {"kind": "greeting", "channel": "webhook", "template": {"body": "Hi"}},
        }
    )


def _change(n: int, customer: str, at: datetime, birthday: str) -> Change:
    stamp = at.isoformat()
    return Change.model_validate(
        {
            "change_id": f"ch-{n}",
            "customer_id": customer,
            "cause": "event",
            "at": stamp,
            "event": {
                "event_id": f"ev-{n}",
                "event_type": "visit.recorded",
                "customer_id": customer,
                "occurred_at": stamp,
                "received_at": stamp,
                "source": "test",
                "data": {"visit_id": f"v-{n}", "channel": "web"},
            },
            "card": {
                "customer_id": customer,
                "profile": {
                    "birthday": birthday,
                    "timezone": "UTC",
                    "consent": {"email": True, "sms": False, "marketing": True},
                },
            },
        }
    )


# Three customers, a visit every 3 days for 30 days; birthdays inside and outside the window.
BIRTHDAYS = {"a": "1990-03-10", "b": "1985-03-25", "c": "1970-07-01"}
CHANGES = [
    _change(i * 3 + k, customer, START + timedelta(days=i * 3, hours=k), birthday)
    for i in range(10)
    for k, (customer, birthday) in enumerate(BIRTHDAYS.items())
]
UNTIL = START + timedelta(days=30)


def _replay(rule: Rule, chunks: list[list[Change]]) -> BacktestResult:
    replay = Replay(rule, policy=Policy(), suppressed={"b"})
    for chunk in chunks:
        replay.feed(chunk)
    return replay.finish(UNTIL)


def test_a_schedule_fires_between_a_customers_changes_whatever_the_chunks() -> None:
    rule = _rule({"type": "schedule", "kind": "birthday"})
    whole = _replay(rule, [CHANGES])
    # a's and b's birthdays fall in the window (b is suppressed); c's does not.
    assert whole.decided == 2
    assert whole.outcomes == {"send": 1, "suppress": 1}
    # Chunks split anywhere, and one customer's changes before another's: the same decisions.
    by_customer = sorted(CHANGES, key=lambda c: c.customer_id)
    for chunks in ([CHANGES[:7], CHANGES[7:]], [by_customer[:5], by_customer[5:]]):
        again = _replay(rule, chunks)
        assert (again.decided, again.outcomes) == (whole.decided, whole.outcomes)
    assert whole.changes == 30 and whole.customers == 3
    assert (whole.first_at, whole.last_at) == (CHANGES[0].at, CHANGES[-1].at)


def test_a_change_delivered_twice_is_replayed_once() -> None:
    rule = _rule({"type": "event", "event": "visit.recorded"})
    once = _replay(rule, [CHANGES])
    twice = _replay(rule, [CHANGES, CHANGES[:10]])
    assert twice.changes == once.changes == 30
    assert twice.decided == once.decided == 30


def test_a_rule_s_daily_limit_is_counted_by_day_in_the_replay() -> None:
    # A care message (no frequency cap, no quiet hours) on every visit, at most one a day: each
    # replayed day has three visits (a's, b's, c's), b is on the suppression list.
    rule = Rule.model_validate(
        {
            "id": "r",
            "name": "r",
            "trigger": {"type": "event", "event": "visit.recorded"},
            "action": {"kind": "care", "channel": "webhook", "template": {"body": "Hi"}},
            "limits": {"max_per_day": 1},
        }
    )
    result = _replay(rule, [CHANGES])
    assert result.decided == 30
    # b's suppression takes no slot; a's visit, the first of each day, takes the day's one.
    assert result.outcomes == {"send": 10, "suppress": 20}
    assert result.reasons == {"suppressed": 10, "daily_limit": 10}


def test_the_replay_holds_out_whom_the_live_decision_would() -> None:
    # A care message on every visit, half held out: a is in the hold-out of "hold-half", c
    # is not (the live draw), b is on the suppression list (nothing to hold out).
    assert [in_rule_control("hold-half", c, 50) for c in "ac"] == [True, False]
    rule = Rule.model_validate(
        {
            "id": "hold-half",
            "name": "hold-half",
            "trigger": {"type": "event", "event": "visit.recorded"},
            "action": {"kind": "care", "channel": "webhook", "template": {"body": "Hi"}},
            "control_percent": 50,
        }
    )
    result = _replay(rule, [CHANGES])
    assert result.outcomes == {"send": 20, "suppress": 10}
    assert result.held_out == 10  # a's ten visits
    assert _replay(rule.model_copy(update={"control_percent": 0}), [CHANGES]).held_out == 0


def test_a_churn_dated_anew_is_decided_once_in_the_replay_as_live() -> None:
    def churned(n: int, since: str, last_order: str) -> Change:
        change = _change(n, "a", START + timedelta(hours=n), "1990-03-10")
        card = {
            **change.card,
            "stage": "churned",
            "stage_since": f"{since}T00:00:00Z",
            "value": {"last_order_at": f"{last_order}T10:00:00Z"},
        }
        return change.model_copy(update={"card": card})

    rule = _rule({"type": "stage", "to": ["churned"]})
    # Re-dated twice with no purchase in between, then a new silence after a late order.
    result = _replay(
        rule,
        [
            [
                churned(1, "2026-02-01", "2025-10-01"),
                churned(2, "2026-02-09", "2025-10-01"),
                churned(3, "2026-01-25", "2025-10-01"),
                churned(4, "2026-02-27", "2026-02-05"),
            ]
        ],
    )
    assert result.decided == 2


def test_the_replay_reads_the_card_before_each_event_as_live() -> None:
    # a: a visit as maintain, then a visit as develop (the order that brought them back, say);
    # b: develop both times; c: one visit, the first news of them.
    def as_(change: Change, strategy: str) -> Change:
        return change.model_copy(update={"card": {**change.card, "strategy": strategy}})

    rule = Rule.model_validate(
        {
            **_rule({"type": "event", "event": "visit.recorded"}).model_dump(mode="json"),
            "conditions": {"eq": ["before.strategy", "maintain"]},
        }
    )
    changes = [
        as_(_change(1, "a", START, "1990-03-10"), "maintain"),
        as_(_change(2, "b", START, "1985-03-25"), "develop"),
        as_(_change(3, "c", START, "1970-07-01"), "maintain"),
        as_(_change(4, "a", START + timedelta(days=1), "1990-03-10"), "develop"),
        as_(_change(5, "b", START + timedelta(days=1), "1985-03-25"), "develop"),
    ]
    # Only a's second visit: a was maintain before it.
    assert _replay(rule, [changes]).decided == 1
    assert _replay(rule, [changes[:4], changes[4:]]).decided == 1
