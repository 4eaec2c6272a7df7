"""The console's rule editor form: the document it sends outreach, a stored rule read back
into it (and judged by outreach's own rule schema), and the API's error fields placed at the
form's controls."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jinja2 import Environment

from services.console.formatting import install
from services.console.pages.rule_expression import DataFilter, described
from services.console.pages.rule_form import RuleForm, editable, field_of, instant_param
from services.console.pages.rule_trigger import TriggerForm, trigger_words
from services.console.settings import ConsoleSettings
from services.outreach.core.rule_pack import default_pack
from services.outreach.schemas import RuleDefinition

STORED: dict[str, Any] = {
    "id": "thanks",
    "name": "Thank payers",
    "description": "",
    "trigger": {"type": "event", "event": "order.paid", "filters": {"gt": ["amount", "50"]}},
    "conditions": {"gte": ["value.orders", 2]},
    "action": {
        "kind": "follow_up",
        "channel": "webhook",
        "channel_id": "crm",
        "audience": "customer",
        "offer": {"code": "TEN", "description": "10% off"},
        "template": {"subject": "Hi", "body": "Thanks {{ customer.name }}"},
    },
    "limits": {"cooldown_days": 30, "once": False, "max_per_customer": 3, "max_per_day": 20},
    "priority": 5,
    "enabled": True,
    "goal": None,
    "control_percent": 10.0,
}


def test_a_stored_rule_read_into_the_form_comes_back_whole() -> None:
    form = RuleForm.of_rule(STORED)
    assert (form.cond_field, form.cond_op, form.cond_value) == ("value.orders", "gte", "2")
    doc, errors = form.document()
    assert errors == {}
    assert doc["trigger"] == STORED["trigger"]
    assert doc["conditions"] == STORED["conditions"]
    assert doc["action"]["offer"] == STORED["action"]["offer"]
    assert doc["action"]["channel_id"] == "crm"
    assert doc["limits"] == {"cooldown_days": 30, "max_per_customer": 3, "max_per_day": 20}
    assert doc["control_percent"] == 10.0
    assert doc["priority"] == 5


def test_a_tag_test_names_no_card_field_and_is_kept() -> None:
    rule = {**STORED, "conditions": {"has_tag": "vip"}}
    form = RuleForm.of_rule(rule)
    assert (form.cond_op, form.cond_field, form.cond_value) == ("has_tag", "", "vip")
    assert form.document()[0]["conditions"] == {"has_tag": "vip"}
    assert "conditions" not in RuleForm(cond_op="has_tag").document()[0]


def test_a_complex_condition_is_edited_as_json() -> None:
    rule = {**STORED, "conditions": {"all": [{"eq": ["tier", "key"]}, {"has_tag": "vip"}]}}
    form = RuleForm.of_rule(rule)
    assert form.cond_field == ""
    assert '"all"' in form.conditions_json
    assert form.document()[0]["conditions"] == rule["conditions"]


@pytest.mark.parametrize(
    ("op", "field", "value", "expected"),
    [
        ("gt", "value.orders", "3", {"gt": ["value.orders", 3]}),
        ("eq", "tier", "key", {"eq": ["tier", "key"]}),
        ("eq", "profile.attributes.plan", '"3"', {"eq": ["profile.attributes.plan", "3"]}),
        ("ne", "rfm.segment", "null", {"ne": ["rfm.segment", None]}),
        ("has_tag", "", "vip", {"has_tag": "vip"}),
        ("exists", "value.last_order_at", "", {"exists": "value.last_order_at"}),
    ],
)
def test_one_condition_of_the_form(op: str, field: str, value: str, expected: Any) -> None:
    assert RuleForm(cond_field=field, cond_op=op, cond_value=value).condition() == expected


def test_an_event_filter_is_shown_as_one_test_and_sent_back_unchanged() -> None:
    form = RuleForm.of_rule(STORED)
    # The stored amount is text ("50"): shown quoted, so it goes back as text, not a number.
    assert form.trigger.filter == DataFilter(field="amount", op="gt", value='"50"')
    assert form.document()[0]["trigger"]["filters"] == {"gt": ["amount", "50"]}


@pytest.mark.parametrize(
    ("op", "field", "value", "expected"),
    [
        ("eq", "severity", "high", {"eq": ["severity", "high"]}),
        ("gte", "amount", "100", {"gte": ["amount", 100]}),
        ("in", "severity", "low, medium", {"in": ["severity", ["low", "medium"]]}),
        ("exists", "channel", "", {"exists": "channel"}),
        ("eq", "", "high", None),  # no field: every such event
    ],
)
def test_an_event_filter_of_the_form(
    op: str, field: str, value: str, expected: dict[str, Any] | None
) -> None:
    form = RuleForm(
        rule_id="r",
        trigger=TriggerForm(
            event="complaint.opened", filter=DataFilter(field=field, op=op, value=value)
        ),
    )
    doc, errors = form.document()
    assert errors == {}
    assert doc["trigger"].get("filters") == expected


def test_filters_of_more_than_one_test_are_edited_as_json_and_their_typos_are_the_forms() -> None:
    filters = {"all": [{"eq": ["severity", "high"]}, {"exists": "order_id"}]}
    rule = {**STORED, "trigger": {"type": "event", "event": "complaint.opened", "filters": filters}}
    form = RuleForm.of_rule(rule)
    assert form.trigger.filter.field == ""
    assert json.loads(form.trigger.filter.as_json) == filters
    assert form.document()[0]["trigger"]["filters"] == filters
    form.trigger.filter.as_json = '{"eq": ["severity"'
    assert set(form.document()[1]) == {"filter_field"}


@pytest.mark.parametrize(
    ("trigger", "words"),
    [
        (
            {"type": "event", "event": "complaint.opened", "filters": {"eq": ["severity", "high"]}},
            "event: complaint.opened where severity equals high",
        ),
        (
            {
                "type": "event",
                "event": "complaint.opened",
                "filters": {"in": ["severity", ["low", "medium"]]},
            },
            "event: complaint.opened where severity is one of low, medium",
        ),
        ({"type": "event", "event": "order.paid", "filters": None}, "event: order.paid"),
        ({"type": "stage", "from": [], "to": ["churned"]}, "stage: to churned"),
        ({"type": "schedule", "kind": "days_after", "days": 30}, "schedule: days after"),
        ({"type": "broadcast"}, "broadcast"),
    ],
)
def test_the_rules_list_says_what_a_trigger_waits_for(trigger: dict[str, Any], words: str) -> None:
    assert trigger_words(trigger) == words


def test_an_expression_of_more_than_one_test_is_described_as_json() -> None:
    expr = {"any": [{"eq": ["severity", "high"]}, {"gte": ["amount", 100]}]}
    assert json.loads(described(expr)) == expr


def test_what_the_form_cannot_even_send_is_its_own_error() -> None:
    form = RuleForm(rule_id="r", priority="high", cooldown_days="a week", conditions_json="{")
    _, errors = form.document()
    assert set(errors) == {"priority", "cooldown_days", "condition"}


@pytest.mark.parametrize(
    ("field", "reason", "control"),
    [
        ("body.id", "string does not match", "rule_id"),
        ("body.conditions", "gt: unknown card field", "condition"),
        ("body.trigger.event.event", "Input should be", "trigger_event"),
        ("body.trigger.event.filters", "eq: unknown complaint.opened data field", "filter_field"),
        ("body.trigger.stage.to.0", "Input should be", "stage_to"),
        ("body.trigger.stage.entered_within_days", "Input should be", "entered_within_days"),
        ("body.trigger.schedule.cron.expression", "not a five-field cron", "cron_expression"),
        ("body.trigger.schedule.calendar.dates", "not MM-DD", "calendar_dates"),
        ("body.trigger.schedule.calendar.name", "at least 1", "calendar_name"),
        ("body.trigger.schedule.days_after.at", "a local time", "schedule_at"),
        ("body.trigger.schedule.days_after.since", "not a date", "since"),
        ("body.trigger.schedule.days_after", "give exactly one", "after_days"),
        ("body.trigger", "does not match any of the tags", "trigger_type"),
        ("body.action.template", "subject: an email needs a subject", "subject"),
        ("body.action.template", "body: template syntax error", "body"),
        ("body.action.channel_id", "no such channel", "channel_id"),
        ("body.limits.cooldown_days", "Input should be greater", "cooldown_days"),
        ("query.days", "Input should be less", "backtest_days"),
        ("query.at", "not an instant", "preview_at"),
        ("body.control_percent", "too high", "control_percent"),
        ("body.goal.filters", "eq: unknown order.paid data field", "goal_filter_field"),
        ("body.goal.within_days", "greater than", "goal_within_days"),
        ("body.goal.count", "Input should be", "goal_count"),
        ("body.unknown", "Extra inputs are not permitted", ""),
        ("body.trigger.membership.to.1", "at least 1 character", "member_to"),
        ("body.trigger.membership.from.0", "at least 1 character", "member_from"),
        ("body.trigger.membership.direction", "Input should be", "member_direction"),
        ("body.trigger.membership.entered_within_days", "greater than", "entered_within_days"),
        ("body.trigger.schedule.calendar.calendar", "'XX' is neither", "holiday_calendar"),
        ("body.trigger.schedule.calendar", "give a calendar, dates, or both", "holiday_calendar"),
        ("body.trigger.schedule.anniversary.since", "not a date", "since"),
        ("body.action.tags", "a tag action adds or removes at least one tag", "tags_add"),
        ("body.action.tags", "a tag is added or removed, not both: vip", "tags_add"),
        ("body.action.tags.add.0", "String should match pattern", "tags_add"),
        ("body.action.tags.remove.2", "String should match pattern", "tags_remove"),
        ("body.action", "a tag action needs tags", "tags_add"),
        ("body.action.audience", "a team alert goes to a team's webhook", "team_alert"),
        ("body.action.offer.code", "at least 1 character", "offer_code"),
        ("body.action.offer.expires_days", "greater than", "offer_expires_days"),
        ("body.offer.discount", "at most 32 characters", "offer_discount"),
        ("body.limits.max_per_customer", "greater than", "max_per_customer"),
        ("body.limits.not_contacted_days", "greater than", "not_contacted_days"),
        ("body.limits", "a tag action is not a contact", "cooldown_days"),
        ("body.trigger.event.recorded_within_days", "greater than", "recorded_within_days"),
    ],
)
def test_an_api_error_field_is_placed_at_its_control(field: str, reason: str, control: str) -> None:
    assert field_of(field, reason) == control


@pytest.mark.parametrize(
    "trigger",
    [
        {"type": "stage", "from": ["mature"], "to": ["declining", "churned"]},
        {"type": "stage", "from": [], "to": ["churned"], "entered_within_days": 30},
        {"type": "schedule", "kind": "birthday", "at": "10:30"},
        {"type": "schedule", "kind": "anniversary", "at": "09:00"},
        {
            "type": "schedule",
            "kind": "days_after",
            "since": "value.last_order_at",
            "days": 45,
            "at": "09:00",
            "catch_up_days": 10,
        },
        {
            "type": "schedule",
            "kind": "days_after",
            "since": "value.first_order_at",
            "rhythm_multiple": 1.5,
            "at": "08:00",
        },
        {
            "type": "schedule",
            "kind": "calendar",
            "name": "Holidays",
            "dates": ["12-24", "2027-01-01"],
            "at": "09:00",
        },
        {"type": "schedule", "kind": "cron", "expression": "0 10 * * 1"},
        {"type": "broadcast"},
    ],
)
def test_every_trigger_type_is_edited_in_the_form(trigger: dict[str, Any]) -> None:
    rule = {**STORED, "trigger": trigger}
    assert editable(rule)
    doc, errors = RuleForm.of_rule(rule).document()
    assert errors == {}
    assert doc["trigger"] == trigger
    assert not editable({**STORED, "trigger": {"type": "webhook"}})


def test_a_schedule_built_from_posted_fields() -> None:
    posted = {
        "trigger_type": "calendar",
        "schedule_at": "09:30",
        "calendar_name": "Sales",
        "calendar_dates": "11-27, 12-26\n2027-01-02",
        "after_days": "ignored by a calendar",
    }
    form = RuleForm.of_fields(lambda n: posted.get(n, ""), lambda n: [])
    doc, errors = form.document()
    assert errors == {}
    assert doc["trigger"] == {
        "type": "schedule",
        "kind": "calendar",
        "at": "09:30",
        "name": "Sales",
        "dates": ["11-27", "12-26", "2027-01-02"],
    }
    stage = {"trigger_type": "stage", "entered_within_days": "a month"}
    form = RuleForm.of_fields(
        lambda n: stage.get(n, ""), lambda n: ["churned"] if n == "stage_to" else []
    )
    doc, errors = form.document()
    assert errors == {"entered_within_days": "a whole number of days"}
    assert doc["trigger"]["to"] == ["churned"]


def _as_stored(raw: dict[str, Any]) -> dict[str, Any]:
    """A rule as outreach stores and serves it (every field, defaults included)."""
    return RuleDefinition.model_validate(raw).model_dump(mode="json", by_alias=True)


MESSAGE = {"kind": "greeting", "channel": "email", "template": {"subject": "Hi", "body": "Hello"}}
TAGGING = {"kind": "tag", "tags": {"add": ["gold-welcomed", "vip"], "remove": ["silver"]}}


@pytest.mark.parametrize(
    ("trigger", "action"),
    [
        pytest.param(
            {
                "type": "membership",
                "from": ["silver", "Silver Plus"],
                "to": ["gold"],
                "direction": "upgrade",
                "entered_within_days": 14,
            },
            MESSAGE,
            id="membership",
        ),
        pytest.param(
            {"type": "membership", "to": [], "direction": "downgrade"}, MESSAGE, id="downgrade"
        ),
        pytest.param({"type": "membership", "to": ["gold"]}, TAGGING, id="tag-action"),
        pytest.param(
            {"type": "event", "event": "order.paid"},
            {"kind": "tag", "tags": {"remove": ["lapsed"]}},
            id="tag-remove-only",
        ),
        pytest.param(
            {
                "type": "schedule",
                "kind": "calendar",
                "name": "Holidays",
                "calendar": "GB",
                "solemn_days": True,
                "at": "10:00",
            },
            MESSAGE,
            id="calendar-holidays",
        ),
        pytest.param(
            {
                "type": "schedule",
                "kind": "calendar",
                "name": "Own or sales",
                "calendar": "customer",
                "dates": ["11-27", "2027-01-02"],
            },
            MESSAGE,
            id="calendar-customer-and-dates",
        ),
        pytest.param(
            {"type": "schedule", "kind": "anniversary", "since": "profile.attributes.wedding"},
            MESSAGE,
            id="anniversary-since",
        ),
        pytest.param(
            {
                "type": "event",
                "event": "order.paid",
                "filters": {"gt": ["amount", 50]},
                "recorded_within_days": 3,
            },
            {**MESSAGE, "channel": "preferred", "offer": {"code": "TEN", "discount": "10%"}},
            id="preferred-channel-offer",
        ),
        pytest.param(
            {"type": "event", "event": "complaint.opened"},
            {
                "kind": "care",
                "channel": "webhook",
                "channel_id": "support-chat",
                "audience": "team",
                "template": {"body": "Complaint from {{ customer.name }}"},
            },
            id="team-alert",
        ),
    ],
)
def test_a_stored_rule_of_every_trigger_and_action_round_trips_through_the_form(
    trigger: dict[str, Any], action: dict[str, Any]
) -> None:
    stored = _as_stored({"id": "r", "name": "R", "trigger": trigger, "action": action})
    assert editable(stored)
    form = RuleForm.of_rule(stored)
    # Through the page: the form's fields as posted, what it keeps in its hidden JSON.
    assert form.kept == json.loads(json.dumps(form.kept))
    doc, errors = form.document()
    assert errors == {}
    assert _as_stored(doc) == stored


def test_a_stored_message_rule_with_every_limit_an_offer_and_a_goal_round_trips() -> None:
    stored = _as_stored(
        {
            "id": "r",
            "name": "R",
            "trigger": {"type": "stage", "to": ["declining"]},
            "action": {
                **MESSAGE,
                "offer": {
                    "code": "BACK15",
                    "description": "15% off",
                    "discount": "15%",
                    "expires_days": 14,
                },
            },
            "limits": {
                "cooldown_days": 30,
                "max_per_customer": 3,
                "once": True,
                "not_contacted_days": 7,
            },
            "goal": {
                "event": "order.paid",
                "filters": {"gte": ["amount", 20]},
                "within_days": 21,
                "count": "every",
            },
            "control_percent": 12.5,
        }
    )
    doc, errors = RuleForm.of_rule(stored).document()
    assert errors == {}
    assert _as_stored(doc) == stored


def test_a_goals_filter_is_shown_as_one_test_and_sent_with_the_goal() -> None:
    stored = _as_stored(
        {
            "id": "r",
            "name": "R",
            "trigger": {"type": "broadcast"},
            "action": MESSAGE,
            "goal": {"event": "order.paid", "filters": {"gte": ["amount", 20]}},
        }
    )
    form = RuleForm.of_rule(stored)
    assert (form.goal_event, form.goal_within_days, form.goal_count) == ("order.paid", "", "first")
    assert form.goal_filter == DataFilter(field="amount", op="gte", value="20")
    form.goal_within_days = "10"
    assert form.document()[0]["goal"] == {
        "event": "order.paid",
        "filters": {"gte": ["amount", 20]},
        "count": "first",
        "within_days": 10,
    }
    form.goal_filter.field = ""  # every such event counts
    assert form.document()[0]["goal"] == {
        "event": "order.paid",
        "count": "first",
        "within_days": 10,
    }
    form.goal_filter.as_json = '{"in": ["channel", ["web", "app"]]}'
    assert form.document()[0]["goal"]["filters"] == {"in": ["channel", ["web", "app"]]}
    form.goal_filter.as_json = "{"
    assert set(form.document()[1]) == {"goal_filter_field"}
    form.goal_filter.as_json = ""
    form.goal_event, form.goal_within_days = "", ""
    assert form.document()[0]["goal"] is None  # the default: an order in the kind's window
    form.goal_within_days = "soon"
    assert form.document()[1] == {"goal_within_days": "a whole number of days"}


def test_offers_limits_and_the_control_group_from_posted_fields() -> None:
    posted = {
        "rule_id": "back",
        "name": "Back",
        "trigger_type": "event",
        "trigger_event": "order.paid",
        "recorded_within_days": "2",
        "action_kind": "winback",
        "action_channel": "email",
        "subject": "We miss you",
        "body": "Use {{ offer.code }}",
        "offer_code": "BACK15",
        "offer_expires_days": "10",
        "max_per_customer": "2",
        "not_contacted_days": "5",
        "control_percent": "10",
    }
    doc, errors = RuleForm.of_fields(lambda n: posted.get(n, ""), lambda n: []).document()
    assert errors == {}
    assert doc["trigger"] == {"type": "event", "event": "order.paid", "recorded_within_days": 2}
    assert doc["action"]["offer"] == {"code": "BACK15", "expires_days": 10}
    assert doc["limits"] == {"max_per_customer": 2, "not_contacted_days": 5}
    assert doc["control_percent"] == 10.0
    RuleDefinition.model_validate(doc)
    wrong = {
        **posted,
        "offer_expires_days": "soon",
        "max_per_customer": "2.5",
        "control_percent": "x",
    }
    _, errors = RuleForm.of_fields(lambda n: wrong.get(n, ""), lambda n: []).document()
    assert set(errors) == {"offer_expires_days", "max_per_customer", "control_percent"}


def test_a_membership_rule_with_a_tag_action_built_from_posted_fields() -> None:
    posted = {
        "rule_id": "gold",
        "name": "Gold",
        "trigger_type": "membership",
        "member_to": "gold, Gold Plus\n",
        "member_from": "",
        "member_direction": "upgrade",
        "entered_within_days": "7",
        "action_kind": "tag",
        "tags_add": "gold-welcomed  vip",
        "tags_remove": "silver",
        # What the hidden message and limit controls still hold is not sent with a tag.
        "action_channel": "email",
        "body": "Hello",
        "cooldown_days": "30",
        "once": "on",
    }
    form = RuleForm.of_fields(lambda n: posted.get(n, ""), lambda n: [])
    doc, errors = form.document()
    assert errors == {}
    assert doc["trigger"] == {
        "type": "membership",
        "from": [],
        "to": ["gold", "Gold Plus"],
        "direction": "upgrade",
        "entered_within_days": 7,
    }
    assert doc["action"] == {
        "kind": "tag",
        "tags": {"add": ["gold-welcomed", "vip"], "remove": ["silver"]},
    }
    assert doc["limits"] == {}
    RuleDefinition.model_validate(doc)  # outreach takes it


def test_fields_kept_from_a_stored_rule_stay_with_their_own_kind() -> None:
    form = RuleForm.of_rule(STORED)  # an event trigger with filters, a message with an offer
    form.trigger.type = "membership"
    form.trigger.member_to = "gold"
    form.action.kind = "tag"
    form.action.tags_add = "gold"
    doc, errors = form.document()
    assert errors == {}
    assert "filters" not in doc["trigger"]
    assert doc["action"] == {"kind": "tag", "tags": {"add": ["gold"], "remove": []}}
    # A tag action is not a contact: the message's limits and control group are not sent.
    assert (doc["limits"], "control_percent" in doc) == ({}, False)
    assert doc["goal"] is None


def test_a_local_instant_is_sent_as_utc() -> None:
    assert instant_param("2026-12-24T09:00") == "2026-12-24T09:00Z"
    assert instant_param("2026-12-24T09:00+01:00") == "2026-12-24T09:00+01:00"
    assert instant_param(" ") is None


def test_numbers_and_money_are_written_for_people() -> None:
    env = Environment(autoescape=True)
    install(env, ConsoleSettings(currency="USD", locale="en_US"))

    def render(source: str) -> str:
        return env.from_string(source).render()

    assert render("{{ 1234567|number }}") == "1,234,567"
    assert render("{{ '1234.5'|money }}") == "$1,234.50"
    assert render("{{ 0.8123|share }}") == "81.2%"
    assert render("{{ none|money }}") == "—"
    assert render("{{ 'frequency_cap'|label }}") == "frequency cap"
    assert render("{{ '2026-12-05T14:03:00+01:00'|instant }}") == (
        '<time datetime="2026-12-05T13:03:00+00:00">2026-12-05 13:03 UTC</time>'
    )
    euro = Environment(autoescape=True)
    install(euro, ConsoleSettings(currency="EUR", locale="de_DE"))
    assert euro.from_string("{{ '1234.5'|money }}").render() == "1.234,50\xa0€"


def test_every_rule_of_the_default_pack_round_trips_through_the_form() -> None:
    shown: dict[str, tuple[str, str, str]] = {}
    for rule in default_pack():
        stored = rule.model_dump(mode="json")
        assert editable(stored)
        form = RuleForm.of_rule(stored)
        if form.trigger.filter.field:
            test = form.trigger.filter
            shown[rule.id] = (test.field, test.op, test.value)
        doc, errors = form.document()
        assert errors == {}, rule.id
        assert RuleDefinition.model_validate(doc).model_dump(mode="json") == stored, rule.id
    # The pack's complaint rules tell the severities apart: the form shows which each takes.
    assert sorted(shown.values()) == [("severity", "eq", "high"), ("severity", "in", "low, medium")]
