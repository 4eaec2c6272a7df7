"""Rules: strict validation with errors that name the field, and matching changes to rules."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from bench.bench_outreach import benchmark
from services.outreach.core.rule_pack import DEFAULT_PACK, default_pack
from services.outreach.core.rules import (
    Episode,
    EventSeen,
    Match,
    Rule,
    RuleFailure,
    RuleSet,
    redated,
    template_errors,
)
from services.outreach.core.templates import SAMPLE_CARD
from services.outreach.core.trust import TRUSTED


def error_list(exc: ValidationError) -> list[dict[str, str]]:
    """``[{"field": "trigger.schedule.days_after.days", "message": ...}]``."""
    return [
        {
            "field": ".".join(str(p) for p in e["loc"]) or "rule",
            "message": e["msg"].removeprefix("Value error, "),
        }
        for e in exc.errors(include_url=False)
    ]


def match_change(
    ruleset: RuleSet, change: dict[str, Any], before: dict[str, Any] | None = None
) -> list[Match]:
    """The rules ``change`` (the parts of one the index reads) fires, best first; ``before``:
    the customer's card before it."""
    event = change["event"]
    return ruleset.match_parts(
        change["customer_id"],
        change["card"],
        event=EventSeen(event["event_type"], event["event_id"], event["data"]) if event else None,
        before=before,
    )


def match_broadcast(
    ruleset: RuleSet, rule: Rule, card: dict[str, Any], launch_id: str
) -> Match | None:
    """``rule`` for this card's customer when it is a broadcast whose audience holds them."""
    if rule.trigger.type != "broadcast" or not ruleset.conditions_hold(rule, card):
        return None
    return Match(rule, str(card["customer_id"]), launch_id)


def raw_rule(rule_id: str = "r", priority: int = 0, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": rule_id,
        "name": rule_id,
        "trigger": {"type": "event", "event": "order.paid"},
        "action": {"kind": "follow_up", "channel": "webhook", "template": {"body": "thanks"}},
        "priority": priority,
    }
    return base | fields


def rule(rule_id: str = "r", priority: int = 0, **fields: Any) -> Rule:
    return Rule.model_validate(raw_rule(rule_id, priority, **fields))


def errors_of(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as raised:
        Rule.model_validate(raw)
    return {e["field"]: e["message"] for e in error_list(raised.value)}


def card(**top: Any) -> dict[str, Any]:
    return copy.deepcopy(dict(SAMPLE_CARD)) | top


def change(
    event_type: str | None = None,
    data: dict[str, Any] | None = None,
    moved: tuple[str, str] | None = None,
    c: dict[str, Any] | None = None,
) -> dict[str, Any]:
    event = None
    if event_type is not None:
        event = {"event_id": "ev-1", "event_type": event_type, "data": data or {}}
    c = c if c is not None else card()
    if moved is not None:  # the card is in the stage the change moved it to
        c = {**c, "previous_stage": moved[0], "stage": moved[1], "stage_since": "2025-05-30"}
    return {
        "change_id": "ch-1",
        "customer_id": "c1",
        "cause": "event" if event else "time",
        "event": event,
        "card": c,
        "stage_change": None if moved is None else {"from": moved[0], "to": moved[1], "at": "x"},
    }


# --- the default pack -------------------------------------------------------------------


def test_the_default_pack_validates_and_round_trips() -> None:
    pack = default_pack()
    assert [r.id for r in pack] == [raw["id"] for raw in DEFAULT_PACK]
    for r in pack:
        assert Rule.model_validate(r.model_dump(mode="json")) == r
    kinds = {r.id: (r.trigger.type, r.action.kind) for r in pack}
    assert kinds["winback-churned"] == ("stage", "winback")
    assert kinds["complaint-apology"] == ("event", "apology")
    assert kinds["new-arrivals"] == ("broadcast", "announcement")
    RuleSet(pack)  # every filter and condition compiles


# --- validation ---------------------------------------------------------------------------


def test_unknown_fields_are_rejected_by_name() -> None:
    raw = raw_rule(colour="red")
    raw["limits"] = {"cooldown": 3}
    raw["trigger"] = {"type": "stage", "to": ["churned"], "when": "now"}
    assert errors_of(raw) == {
        "colour": "Extra inputs are not permitted",
        "limits.cooldown": "Extra inputs are not permitted",
        "trigger.stage.when": "Extra inputs are not permitted",
    }


def test_a_team_alert_may_hold_out_a_control_group_and_a_tag_action_may_not() -> None:
    alert = {"kind": "care", "channel": "webhook", "audience": "team", "template": {"body": "x"}}
    assert rule(action=alert, control_percent=10).control_percent == 10
    tagging = {"kind": "tag", "tags": {"add": ["vip"]}}
    assert errors_of(raw_rule(action=tagging, control_percent=10)) == {
        "control_percent": "a tag action sends nothing: it has no control group"
    }


def test_conditions_errors_name_the_path_inside_the_expression() -> None:
    raw = raw_rule(conditions={"all": [{"eq": ["tier", "key"]}, {"gt": ["value.order", 3]}]})
    assert errors_of(raw) == {
        "conditions": "all[1].gt: unknown card field 'value.order' (did you mean 'value.orders'?)"
    }


def test_event_filters_are_validated_against_the_event_data() -> None:
    severity = {"eq": ["severity", "hi"]}
    raw = raw_rule(trigger={"type": "event", "event": "complaint.opened", "filters": severity})
    assert errors_of(raw) == {
        "trigger.event.filters": "eq: 'severity': 'hi' is not one of high, low, medium"
    }
    unknown = raw_rule(trigger={"type": "event", "event": "order.lost"})
    assert "trigger.event.event" in errors_of(unknown)


def test_a_template_that_does_not_render_is_rejected_with_the_error() -> None:
    raw = raw_rule()
    raw["action"]["template"] = {"body": "Hi {{ customer.nmae }}"}
    assert template_errors(Rule.model_validate(raw)) == [
        ("action.template.body", "'dict object' has no attribute 'nmae'")
    ]
    raw["action"]["template"] = {"body": "{{ ''.__class__.__mro__ }}"}
    [(field, why)] = template_errors(Rule.model_validate(raw))
    assert field == "action.template.body" and "not allowed in a template" in why
    raw["action"]["template"] = {"body": "{% if card.tier %}unclosed"}
    [(field, why)] = template_errors(Rule.model_validate(raw))
    assert field == "action.template.body" and why.startswith("line 1: Unexpected end of")
    raw["action"]["template"] = {"body": "{% if card.tier == 'low' %}{{ 'x' * 10**10 }}{% endif %}"}
    assert template_errors(Rule.model_validate(raw)) == [
        ("action.template.body", "template_limit: text over 100000 characters")
    ]
    raw["action"] |= {"channel": "email", "template": {"body": "no subject"}}
    assert errors_of(raw) == {"action.template": "subject: an email needs a subject"}


def test_a_template_may_use_the_offer_only_when_there_is_one() -> None:
    raw = raw_rule()
    raw["action"]["template"] = {"body": "Use {{ offer.code }}"}
    assert template_errors(Rule.model_validate(raw)) == [
        ("action.template.body", "'None' has no attribute 'code'")
    ]
    raw["action"]["offer"] = {"code": "X1", "description": "a gift"}
    assert template_errors(Rule.model_validate(raw)) == []


def test_a_stored_rule_is_trusted_when_loaded() -> None:
    # Loading rules re-checks nothing costly: no template compiles, no condition is judged.
    raw = raw_rule(conditions={"between": ["profile.attributes.x", 1, "z"]})
    raw["trigger"] = {"type": "schedule", "kind": "cron", "expression": "0 9 31 2 *"}
    assert set(errors_of(raw)) == {"conditions", "trigger.schedule.cron.expression"}
    assert Rule.model_validate(raw, context=TRUSTED).conditions is not None


@pytest.mark.parametrize(
    ("trigger", "field", "message"),
    [
        (
            {"kind": "days_after", "days": 7, "rhythm_multiple": 1.5},
            "trigger.schedule.days_after",
            "give exactly one of days or rhythm_multiple",
        ),
        (
            {"kind": "days_after", "since": "tier", "days": 7},
            "trigger.schedule.days_after.since",
            "'tier' is not a date or datetime field of the card, nor profile.attributes.<name>",
        ),
        (
            {"kind": "cron", "expression": "*/15 9 * * *"},
            "trigger.schedule.cron.expression",
            "must fire at one minute of one hour (at most once a day)",
        ),
        (
            {"kind": "cron", "expression": "0 25 * * *"},
            "trigger.schedule.cron.expression",
            "not a five-field cron expression (minute hour day month weekday)",
        ),
        (
            {"kind": "calendar", "name": "holidays", "dates": ["12-25", "02-30"]},
            "trigger.schedule.calendar.dates",
            "not MM-DD or YYYY-MM-DD dates: '02-30'",
        ),
        (
            {"kind": "birthday", "at": "09:00:30"},
            "trigger.schedule.birthday.at",
            "a local time as HH:MM, without seconds or a zone",
        ),
    ],
)
def test_schedule_errors(trigger: dict[str, Any], field: str, message: str) -> None:
    assert errors_of(raw_rule(trigger={"type": "schedule", **trigger})) == {field: message}


def test_limits_and_priority_bounds() -> None:
    errors = errors_of(raw_rule(priority=5000, limits={"cooldown_days": 0, "max_per_day": 0}))
    assert set(errors) == {"priority", "limits.cooldown_days", "limits.max_per_day"}


# --- matching ---------------------------------------------------------------------------------


def test_event_triggers_match_their_event_type_with_the_event_id_as_occurrence() -> None:
    visit = rule("visit", trigger={"type": "event", "event": "visit.recorded"})
    ruleset = RuleSet([rule("paid"), visit])
    (m,) = match_change(ruleset, change("order.paid", {"amount": "10.00"}))
    assert (m.rule.id, m.customer_id, m.occurrence) == ("paid", "c1", "ev-1")
    assert match_change(ruleset, change("order.refunded")) == []


def test_event_filters_select_on_the_event_data() -> None:
    high = {"eq": ["severity", "high"]}
    apology = rule(
        "apology", trigger={"type": "event", "event": "complaint.opened", "filters": high}
    )
    ruleset = RuleSet([apology])
    assert len(match_change(ruleset, change("complaint.opened", {"severity": "high"}))) == 1
    assert match_change(ruleset, change("complaint.opened", {"severity": "low"})) == []
    assert match_change(ruleset, change("complaint.opened", {})) == []


def test_an_event_recorded_long_after_it_happened_is_judged_not_answered() -> None:
    trigger = {"type": "event", "event": "complaint.opened", "recorded_within_days": 2}
    ruleset = RuleSet([rule("apology", trigger=trigger), rule("paid")])

    def seen(event_type: str, late: timedelta) -> list[str]:
        event = EventSeen(event_type, "ev-1", {}, late)
        return [m.rule.id for m in ruleset.match_parts("c1", {}, event=event)]

    assert seen("complaint.opened", timedelta(hours=1)) == ["apology"]
    assert seen("complaint.opened", timedelta(days=2)) == ["apology"]
    assert seen("complaint.opened", timedelta(days=2, seconds=1)) == []  # last year's, loaded
    assert seen("order.paid", timedelta(days=400)) == ["paid"]  # a rule without the bound
    assert set(errors_of(raw_rule(trigger={**trigger, "recorded_within_days": 0}))) == {
        "trigger.event.recorded_within_days"
    }


def test_conditions_select_on_the_card() -> None:
    ruleset = RuleSet([rule(conditions={"in": ["tier", ["key", "regular"]]})])
    assert len(match_change(ruleset, change("order.paid", c=card(tier="key")))) == 1
    assert match_change(ruleset, change("order.paid", c=card(tier="low"))) == []


@pytest.mark.parametrize(
    ("trigger", "moved", "fires"),
    [
        ({"to": ["churned"]}, ("declining", "churned"), True),
        ({"to": ["churned"]}, ("declining", "mature"), False),
        ({"from": ["declining"], "to": ["churned"]}, ("new", "churned"), False),
        ({"from": ["declining", "new"], "to": ["churned"]}, ("new", "churned"), True),
        ({"from": ["churned", "declining"]}, ("churned", "reactivated"), True),  # to: any
        ({}, ("prospect", "new"), True),  # any transition
    ],
)
def test_stage_triggers(trigger: dict[str, Any], moved: tuple[str, str], fires: bool) -> None:
    ruleset = RuleSet([rule(trigger={"type": "stage", **trigger})])
    matches = match_change(ruleset, change(moved=moved))
    assert [m.occurrence for m in matches] == ([f"{moved[1]}@2025-05-30"] if fires else [])


def test_a_stage_rule_matches_every_change_of_its_episode_with_one_key() -> None:
    # Entered live, seen again on later changes, or first true after a refit: one episode key.
    ruleset = RuleSet([rule(trigger={"type": "stage", "to": ["churned"]})])
    lost = card(stage="churned", stage_since="2025-03-01", previous_stage="declining")
    keys = {
        m.occurrence
        for c in (lost, {**lost, "tier": "key"})
        for m in match_change(ruleset, change(c=c))
    }
    assert keys == {"churned@2025-03-01"}
    # A later episode of the same stage is a new occurrence.
    again = {**lost, "stage_since": "2026-01-10", "previous_stage": "reactivated"}
    assert [m.occurrence for m in match_change(ruleset, change(c=again))] == ["churned@2026-01-10"]


def test_conditions_that_come_true_later_in_the_episode_fire_then() -> None:
    ruleset = RuleSet(
        [rule(trigger={"type": "stage", "to": ["churned"]}, conditions={"eq": ["tier", "key"]})]
    )
    lost = card(stage="churned", stage_since="2025-03-01", previous_stage="declining", tier=None)
    assert match_change(ruleset, change(c=lost)) == []  # no tier yet: an imported history
    assert len(match_change(ruleset, change(c={**lost, "tier": "key"}))) == 1  # after a refit


@pytest.mark.parametrize(("since", "fires"), [("2025-04-02", True), ("2025-04-01", False)])
def test_entered_within_days_keeps_old_losses_out(since: str, fires: bool) -> None:
    trigger = {"type": "stage", "to": ["churned"], "entered_within_days": 60}
    ruleset = RuleSet([rule(trigger=trigger)])
    # The sample card is as of 2025-06-01: 60 days before is 2025-04-02.
    lost = card(stage="churned", stage_since=since, previous_stage="declining")
    assert bool(match_change(ruleset, change(c=lost))) is fires


def test_one_change_can_fire_event_and_stage_rules_best_first() -> None:
    rules = [
        rule("a-event", priority=1),
        rule("b-stage", priority=9, trigger={"type": "stage", "to": ["reactivated"]}),
        rule("c-event", priority=1),
        rule("off", priority=99, enabled=False),
    ]
    matches = match_change(RuleSet(rules), change("order.paid", moved=("churned", "reactivated")))
    assert [(m.rule.id, m.occurrence) for m in matches] == [
        ("b-stage", "reactivated@2025-05-30"),
        ("a-event", "ev-1"),
        ("c-event", "ev-1"),
    ]


def test_schedules_and_broadcasts_never_match_a_change() -> None:
    pack = RuleSet(default_pack())
    assert {r.id for r in pack.schedules} == {
        "birthday-greeting",
        "holiday-greeting",
        "purchase-follow-up",
        "rhythm-recall",
        "care-key-quiet",
        "nurture-second-order",
    }

    # Messages only: tag rules (which send nothing) look at every change of their stages.
    def messages(c: dict[str, Any]) -> list[str]:
        return [m.rule.id for m in match_change(pack, c) if not m.rule.action.is_tag]

    assert messages(change()) == []  # a time change without a stage move
    assert messages(change(moved=("declining", "churned"))) == ["winback-churned"]


def test_broadcast_audience() -> None:
    pack = RuleSet(default_pack())
    announce, _ = pack.broadcasts  # new-arrivals, maintain-thank-you-note (by priority)
    champion = card()
    match = match_broadcast(pack, announce, champion, "launch-7")
    assert match == Match(announce, "sample-customer", "launch-7")
    hibernating = card(rfm={**SAMPLE_CARD["rfm"], "segment": "hibernating"})
    assert match_broadcast(pack, announce, hibernating, "launch-7") is None
    assert match_broadcast(pack, pack.schedules[0], champion, "launch-7") is None


def test_rule_ids_are_unique_in_a_ruleset() -> None:
    with pytest.raises(ValueError, match="unique"):
        RuleSet([rule("same"), rule("same")])


def test_the_benchmark_runs() -> None:
    result = benchmark(changes=500, rules=100)
    assert result.matches > 0 and result.changes_per_second > 0


# -- isolation --------------------------------------------------------------------------------


def test_a_rule_that_raises_while_matching_is_skipped_and_reported() -> None:
    mixed = {"between": ["profile.attributes.x", 1, "z"]}  # refused at save, stored anyway
    bad = Rule.model_validate(raw_rule("bad", priority=9, conditions=mixed), context=TRUSTED)
    ruleset = RuleSet([bad, rule("good")])
    c = card()
    c["profile"]["attributes"] = {"x": "5"}
    failures: list[RuleFailure] = []
    matches = ruleset.match_parts(
        "c1", c, event=EventSeen("order.paid", "e1", {}), failures=failures
    )
    assert [m.rule.id for m in matches] == ["good"]
    [failure] = failures
    assert failure.rule_id == "bad"
    assert failure.error.startswith("match: TypeError: '<=' not supported")
    assert ruleset.conditions_hold(bad, c, failures) is False
    assert len(failures) == 2


def test_a_stored_rule_that_does_not_compile_is_left_out_not_the_others() -> None:
    unknown = {"eq": ["value.nope", 1]}
    broken = Rule.model_validate(raw_rule("broken", conditions=unknown), context=TRUSTED)
    ruleset = RuleSet([broken, rule("good")])
    assert [r.id for r in ruleset.rules] == ["good"]
    assert ruleset.broken["broken"].startswith("compile: ConditionError: eq: unknown card field")


def test_orderings_that_mix_a_number_and_a_text_are_refused_at_save() -> None:
    mixed = raw_rule(conditions={"between": ["profile.attributes.x", 1, "z"]})
    assert errors_of(mixed) == {
        "conditions": "between: 'profile.attributes.x': mixes a number and a text; use one type"
    }
    quoted = {"between": ["profile.attributes.x", 1, "5.5"]}  # a quoted bound is a text
    assert "conditions" in errors_of(raw_rule(conditions=quoted))
    texts = {"between": ["profile.attributes.x", "a", "m"]}
    assert Rule.model_validate(raw_rule(conditions=texts)).conditions == texts


@pytest.mark.parametrize("expression", ["0 9 31 2 *", "0 9 30 2 *", "0 9 31 4 *"])
def test_a_cron_for_a_date_that_never_exists_is_refused(expression: str) -> None:
    raw = raw_rule(trigger={"type": "schedule", "kind": "cron", "expression": expression})
    assert errors_of(raw) == {
        "trigger.schedule.cron.expression": "never fires: no date matches within 8 years"
    }
    leap = raw_rule(trigger={"type": "schedule", "kind": "cron", "expression": "0 9 29 2 *"})
    assert Rule.model_validate(leap).trigger.type == "schedule"


def test_a_time_driven_episode_dated_anew_without_a_purchase_since_is_the_same_episode() -> None:
    def c(stage: str, since: str, last_order: str) -> dict[str, Any]:
        value = {**SAMPLE_CARD["value"], "last_order_at": f"{last_order}T10:00:00Z"}
        return {"stage": stage, "stage_since": f"{since}T00:00:00Z", "value": value}

    was = Episode.of(c("churned", "2030-05-01", "2030-01-01"))
    assert redated(was, c("churned", "2030-05-20", "2030-01-01")) == Episode(
        "churned", "2030-05-20", None
    )
    assert redated(was, c("churned", "2030-05-01", "2030-01-01")) is None  # not moved
    assert redated(was, c("declining", "2030-05-20", "2030-01-01")) is None  # another stage
    assert redated(was, c("churned", "2030-05-20", "2030-05-01")) is None  # bought that day
    growing = Episode.of(c("growing", "2030-05-01", "2030-05-01"))
    assert redated(growing, c("growing", "2030-05-20", "2030-05-01")) is None  # not by time
