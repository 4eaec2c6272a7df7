"""A schedule's inputs (``inputs_of``): what of a card decides when a rule next fires. The
consumer works out each distinct input once per batch, so two cards with equal inputs must
fire at the same instants, and a card field a schedule reads must be among its inputs."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from services.outreach.core.calendars import Calendars
from services.outreach.core.rule_pack import default_pack
from services.outreach.core.rules import Rule
from services.outreach.core.schedules import (
    CatchUp,
    CronSchedule,
    ScheduleContext,
    inputs_of,
    next_due,
)

CONTEXT = ScheduleContext(
    "Europe/Paris", Calendars(countries=["CN", "US", "FR"]), frozenset({"wedding"})
)


def _rule(n: int, trigger: dict[str, Any]) -> Rule:
    return Rule.model_validate(
        {
            "id": f"s{n}",
            "name": f"s{n}",
            "trigger": {"type": "schedule", **trigger},
            "action": {"kind": "greeting", "channel": "webhook", "template": {"body": "hi"}},
        }
    )


TRIGGERS: list[dict[str, Any]] = [
    {"kind": "anniversary", "since": "profile.attributes.wedding"},
    {"kind": "anniversary", "since": "profile.attributes.undeclared"},
    {"kind": "days_after", "since": "profile.attributes.wedding", "days": 10},
    {"kind": "days_after", "since": "value.first_order_at", "days": 3, "at": "23:30"},
    {"kind": "calendar", "name": "xmas", "calendar": "customer", "dates": ["12-24"]},
    {"kind": "calendar", "name": "cn", "calendar": "CN"},
    {"kind": "calendar", "name": "d", "dates": ["2026-12-05", "02-29"]},
    {"kind": "cron", "expression": "30 1 * * 1"},
]
RULES = [r for r in default_pack() if r.trigger.type == "schedule"] + [
    _rule(n, t) for n, t in enumerate(TRIGGERS)
]


def _cards(n: int, seed: int) -> list[dict[str, Any]]:
    """Cards drawn from a few values of every field a schedule reads (and of one it does
    not), so many share some inputs and differ in others."""
    rng = random.Random(seed)
    moments = ["2026-12-04T22:10:00Z", "2026-12-05T08:00:00Z", "2026-11-20T12:00:00Z", None]
    out = []
    for _ in range(n):
        attributes = rng.choice(
            [{}, {"wedding": "2020-12-05"}, {"wedding": "2019-06-01T10:00:00+02:00"},
             {"wedding": "soon"}, {"undeclared": "2020-01-01"}]
        )  # fmt: skip
        out.append(
            {
                "profile": {
                    "timezone": rng.choice(["Asia/Tokyo", "America/New_York", None, "Nowhere"]),
                    "birthday": rng.choice(["1980-12-05", "1992-02-29", "1975-07-14", None]),
                    "country": rng.choice(["CN", "US", None, "ZZ"]),
                    "locale": rng.choice(["fr-FR", "en", None]),
                    "attributes": attributes,
                    "name": rng.choice(["Ada", "Grace"]),
                },
                "value": {
                    "last_order_at": rng.choice(moments),
                    "first_order_at": rng.choice(moments),
                    "purchase_interval_days": rng.choice([None, 7, 20.5, 0, 1]),
                },
                "tier": rng.choice(["key", "low", None]),
            }
        )
    return out


def test_cards_with_equal_inputs_fire_at_the_same_instants() -> None:
    cards = _cards(600, seed=19)
    for after, catch_up in itertools.product(
        [datetime(2026, 12, 5, 9, 30, tzinfo=UTC), datetime(2027, 2, 28, 23, 0, tzinfo=UTC)],
        [CatchUp(2), CatchUp(2, rule_catch_up=True), None],
    ):
        for rule in RULES:
            seen: dict[tuple[Any, ...], datetime | None] = {}
            for card in cards:
                due = next_due(rule, card, after, context=CONTEXT, catch_up=catch_up)
                key = inputs_of(rule, card, CONTEXT)
                assert seen.setdefault(key, due) == due, (rule.id, key)
            # Cards differ where the schedules read: the inputs are not all alike.
            assert len(seen) > 1 or isinstance(rule.trigger, CronSchedule)


def test_a_field_a_schedule_reads_is_among_its_inputs() -> None:
    base = _cards(1, seed=3)[0]
    base["profile"].update(timezone="Asia/Tokyo", birthday="1980-12-05", country="CN")
    base["profile"]["attributes"] = {"wedding": "2020-12-05"}
    base["value"].update(
        last_order_at="2026-12-04T22:10:00Z",
        first_order_at="2025-12-04T22:10:00Z",
        purchase_interval_days=7,
    )
    for rule in RULES:
        spec: Any = rule.trigger
        since = getattr(spec, "since", "")
        value: Any
        if since.startswith("profile.attributes."):
            name = since.removeprefix("profile.attributes.")
            section, field, value = "profile", "attributes", {name: "2020-12-06"}
        elif since:
            section, field, value = "value", since.removeprefix("value."), "2026-12-01T22:10:00Z"
        elif spec.kind == "birthday":
            section, field, value = "profile", "birthday", "1980-12-06"
        elif spec.kind == "calendar" and spec.calendar == "customer":
            section, field, value = "profile", "country", "US"
        else:
            section, field, value = "profile", "timezone", "America/New_York"
        other = {**base, section: {**base[section], field: value}}
        assert inputs_of(rule, other, CONTEXT) != inputs_of(rule, base, CONTEXT), rule.id
        if getattr(spec, "rhythm_multiple", None) is not None:
            other = {**base, "value": {**base["value"], "purchase_interval_days": 9}}
            assert inputs_of(rule, other, CONTEXT) != inputs_of(rule, base, CONTEXT), rule.id
        # And a field no schedule reads is none of them.
        quiet = {**base, "tier": "low", "profile": {**base["profile"], "name": "Lin"}}
        assert inputs_of(rule, quiet, CONTEXT) == inputs_of(rule, base, CONTEXT), rule.id


def _raises(call: Callable[[], object]) -> bool:
    try:
        call()
    except Exception:
        return True
    return False


def test_a_card_that_makes_a_schedule_raise_makes_its_inputs_raise() -> None:
    """So a card that breaks a rule is never given another card's instants."""
    after = datetime(2026, 12, 5, 1, tzinfo=UTC)
    broken: list[dict[str, Any]] = [
        {"profile": ["not", "a", "profile"], "value": {}},
        {"profile": {"attributes": ["x"], "timezone": "Asia/Tokyo"}, "value": {}},
    ]
    for rule, card in itertools.product(RULES, broken):
        due = partial(next_due, rule, card, after, context=CONTEXT, catch_up=CatchUp(2))
        if _raises(due):
            assert _raises(partial(inputs_of, rule, card, CONTEXT)), rule.id
