"""The console's policy form, outcomes verdicts and JSON diffs: what each sends or shows."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
from fastapi.templating import Jinja2Templates

from services.console import app as console_app
from services.console.clients.api import ApiError, api_error
from services.console.formatting import install, verdict_of
from services.console.pages import channels
from services.console.pages.complaints import readable_hours
from services.console.pages.jsondiff import diff_lines
from services.console.pages.outcomes import chart_of
from services.console.pages.policy import document, form_of, placed, posted_form
from services.console.settings import ConsoleSettings

STORED: dict[str, Any] = {
    "frequency_cap": {"count": 2, "days": 7},
    "quiet_hours": {"start": "21:00", "end": "08:00"},
    "transactional_kinds": ["apology", "care"],
    "promotional_kinds": ["announcement", "recall", "winback"],
    "reduce_cost_no_promotions": True,
    "contact_cost": {"email": "0.002", "webhook": "0.01", "sms": "0.05"},
    "balance": None,
    "marketing_consent_required": True,
    "default_timezone": "UTC",
    "cap_defer_days": {"recall": 7},
}


def test_the_policy_form_round_trips_and_keeps_the_fields_it_does_not_show() -> None:
    form = form_of(STORED)
    assert document(form, STORED) == STORED


def test_the_policy_form_turns_the_cap_and_quiet_hours_off_and_sends_what_was_typed() -> None:
    typed = {**{k: str(v) for k, v in form_of(STORED).items()}, "cap_count": "zero"}
    typed.update(cap_on="", quiet_on="", balance_on="on", balance_ratio="3")
    form = posted_form(lambda name: typed.get(name, ""))
    doc = document(form, STORED)
    assert doc["frequency_cap"] is None and doc["quiet_hours"] is None
    assert doc["balance"] == {"promotions_per_service": 3, "days": 30}
    form = posted_form(lambda name: {**typed, "cap_on": "on"}.get(name, ""))
    # Not a number: sent as typed, so outreach's own reason is the one shown.
    assert document(form, STORED)["frequency_cap"]["count"] == "zero"


def test_the_policy_api_errors_land_at_their_controls() -> None:
    error = ApiError(
        422,
        "invalid",
        [
            {"field": "body.frequency_cap.count", "reason": "too small"},
            {"field": "body.quiet_hours", "reason": "start and end must differ"},
            {"field": "body", "reason": "kinds cannot be transactional and promotional"},
        ],
    )
    by_field, general = placed(error)
    assert by_field == {"cap_count": ["too small"], "quiet_start": ["start and end must differ"]}
    assert general == ["policy: kinds cannot be transactional and promotional"]


def _group(**over: Any) -> dict[str, Any]:
    return {
        "key": "r1",
        "small_sample": False,
        "verdict": "lift",
        "conversion_difference": {"estimate": 0.1, "low": 0.02, "high": 0.18, "method": "x"},
        **over,
    }


def test_a_small_sample_is_never_a_win() -> None:
    assert verdict_of(_group()) == "lift"
    assert verdict_of(_group(small_sample=True)) == "too_small"
    # Against the model's forecast (no control group), a lift is said to be only that.
    assert verdict_of(_group(baseline="model_forecast")) == "lift_vs_forecast"
    assert verdict_of(_group(baseline="model_forecast", verdict="harm")) == "harm_vs_forecast"
    assert verdict_of(_group(baseline="control_group", verdict="harm")) == "harm"
    assert verdict_of(_group(baseline="model_forecast", verdict="no_difference")) == (
        "no_difference"
    )
    assert verdict_of(_group(baseline="model_forecast", small_sample=True)) == "too_small"
    [row] = json.loads(chart_of([_group(small_sample=True), _group(conversion_difference=None)]))
    assert row == {
        "label": "r1",
        "low": 2.0,
        "high": 18.0,
        "estimate": 10.0,
        "verdict": "too_small",
    }


def test_a_lift_over_the_forecast_is_not_shown_as_a_lift_over_a_control_group() -> None:
    templates = Jinja2Templates(directory=Path(console_app.__file__).parent / "templates")
    install(templates.env, ConsoleSettings(currency="USD", locale="en_US"))
    macro = templates.env.from_string('{% from "macros.html" import verdict %}{{ verdict(g) }}')
    assert macro.render(g=_group(baseline="control_group")) == (
        '<span class="status verdict-lift">lift</span>'
    )
    assert macro.render(g=_group(baseline="model_forecast")) == (
        '<span class="status verdict-lift_vs_forecast">lift over the forecast</span>'
    )
    [row] = json.loads(chart_of([_group(baseline="model_forecast")]))
    assert row["verdict"] == "lift_vs_forecast"  # drawn paler, labelled "over the forecast"


def test_a_diff_shows_only_the_changed_lines_with_their_context() -> None:
    before = {"action": {"template": {"subject": "Thank you", "body": "Hi"}}, "id": "r"}
    after = {"action": {"template": {"subject": "Thanks", "body": "Hi"}}, "id": "r"}
    lines = diff_lines(before, after)
    assert [(x.kind, x.text.strip()) for x in lines if x.kind in ("added", "removed")] == [
        ("removed", '"subject": "Thank you"'),
        ("added", '"subject": "Thanks"'),
    ]
    assert diff_lines(before, before) == []
    assert all(x.kind == "added" for x in diff_lines(None, after))


def test_the_channel_form_builds_an_sms_providers_config() -> None:
    form = {**channels.EMPTY, "kind": "sms", "url": "https://sms.example/send", "sms_from": "Tend"}
    assert channels.config_of(form) == {"url": "https://sms.example/send", "from": "Tend"}
    # The email's sender is not the SMS sender, nor the other way round.
    email = {**channels.EMPTY, "kind": "email", "sender": "Shop <a@shop.example>", "sms_from": "X"}
    assert channels.config_of(email) == {"from": "Shop <a@shop.example>"}
    assert channels.SMS_FIELDS["config.from"] == "sms_from"


def test_a_merged_customers_301_names_the_survivor_for_the_page_to_follow() -> None:
    moved = httpx.Response(
        301,
        json={"error": "merged", "message": "customer 'b' was merged into 'a'", "survivor_id": "a"},
        headers={"location": "/v1/customers/a"},
    )
    error = api_error("scoring", moved)
    assert (error.status, error.survivor) == (301, "a")
    assert api_error("scoring", httpx.Response(404, json={"message": "no"})).survivor is None


def test_the_preview_says_how_many_of_those_let_through_a_control_group_holds_out() -> None:
    templates = Jinja2Templates(directory=Path(console_app.__file__).parent / "templates")
    install(templates.env, ConsoleSettings(currency="USD", locale="en_US"))
    page = templates.env.get_template("_dryrun.html")
    preview = {
        "matched": 1200,
        "as_of": "2026-12-07T10:00:00+00:00",
        "held_back": 200,
        "held_out": 100,
        "outcomes": {"send": 1000, "suppress": 200},
        "reasons": {"no_consent": 200},
        "sample": [],
    }

    def text(**more: Any) -> str:
        return " ".join(re.sub(r"<[^>]+>", " ", page.render(preview=preview | more)).split())

    assert "1,200 customers match now" in text()
    assert "200 would be held back. 100 of those let through would be held out" in text()
    assert "held out" not in text(held_out=0)
    assert "3 waiting messages of lower priority would give up their frequency-cap slot" in text(
        gives_way=3
    )
    assert "give up" not in text()
    backtest = {
        "days": 30,
        "decided": 40,
        "customers": 30,
        "changes": 900,
        "held_out": 8,
        "outcomes": {"send": 40},
        "reasons": {},
        "coverage": {"complete": True},
    }
    shown = " ".join(re.sub(r"<[^>]+>", " ", page.render(backtest=backtest)).split())
    assert "replaying 900 changes. 8 of those let through would have been held out" in shown


class _Fetched:
    def __init__(self, value: Any) -> None:
        self.value, self.unavailable, self.error = value, False, None


class _Reader:
    def can(self, scope: str) -> bool:
        return False


def test_a_scheduled_rule_whose_conditions_do_not_hold_says_it_will_do_nothing() -> None:
    templates = Jinja2Templates(directory=Path(console_app.__file__).parent / "templates")
    install(templates.env, ConsoleSettings(currency="USD", locale="en_US"))
    macro = templates.env.from_string(
        '{% from "macros.html" import scheduled_next %}{{ scheduled_next(s) }}'
    )
    row = {
        "rule_id": "care-key-quiet",
        "kind": "care",
        "due_at": "2026-12-08T10:00:00+00:00",
        "waiting_since": None,
    }

    def shown(**fields: object) -> str:
        return " ".join(re.sub(r"<[^>]+>", " ", macro.render(s=row | fields)).split())

    assert "does nothing for them" in shown(conditions_hold=False)
    assert 'class="muted"' in macro.render(s=row | {"conditions_hold": False})
    assert shown(conditions_hold=True) == "care by rule care-key-quiet at 2026-12-08 10:00 UTC"
    assert "does nothing" not in shown(conditions_hold=None)
    held = {"reason": "no_consent", "detail": "no email consent"}
    assert "(would be held back: no email consent)" in shown(conditions_hold=True, held_back=held)
    waiting = shown(conditions_hold=True, waiting_since="2026-12-01T10:00:00+00:00")
    assert "waiting for one of the rule's daily slots" in waiting


def test_a_one_time_buyer_is_not_judged_still_active_but_given_the_chance_of_an_order() -> None:
    templates = Jinja2Templates(directory=Path(console_app.__file__).parent / "templates")
    install(templates.env, ConsoleSettings(currency="USD", locale="en_US"))
    macro = templates.env.from_string(
        '{% from "macros.html" import still_active %}{{ still_active(pr) }}'
    )

    def shown(**pr: object) -> str:
        return " ".join(re.sub(r"<[^>]+>", " ", macro.render(pr=pr)).split())

    forecast = {"7": 0.001, "30": 0.004, "90": 0.012}
    once = shown(frequency=0, p_alive=None, p_order=forecast)
    assert once.startswith("Still active not judged yet")
    assert "An order within 90 days: 1.2% likely." in once
    assert shown(frequency=3, p_alive=0.42, p_order=forecast).startswith(
        "Still active 42.0% likely"
    )
    assert shown(frequency=0, p_alive=None, p_order=None) == ""  # before the first fit


def test_a_preview_says_those_a_daily_limit_holds_back_would_wait_unless_an_event_s() -> None:
    templates = Jinja2Templates(directory=Path(console_app.__file__).parent / "templates")
    install(templates.env, ConsoleSettings(currency="USD", locale="en_US"))
    page = templates.env.get_template("_dryrun.html")
    preview = {
        "matched": 5,
        "as_of": "2026-12-07T10:00:00+00:00",
        "held_back": 3,
        "outcomes": {"send": 2, "suppress": 3},
        "reasons": {"daily_limit": 3},
    }

    def shown(trigger: str) -> str:
        form = {"trigger": {"type": trigger}}
        html = page.render(preview=preview, backtest=None, form=form)
        return " ".join(re.sub(r"<[^>]+>", " ", html).split())

    for lined in ("broadcast", "stage", "schedule"):
        assert "would wait in the rule's line" in shown(lined)
    assert "would wait" not in shown("event")  # an event's are suppressed for good


def test_the_rules_list_counts_who_waits_for_a_daily_slot() -> None:
    templates = Jinja2Templates(directory=Path(console_app.__file__).parent / "templates")
    install(templates.env, ConsoleSettings(currency="USD", locale="en_US"))
    page = templates.env.get_template("rules.html")
    rule = {
        "id": "calls",
        "name": "Calls",
        "enabled": True,
        "priority": 50,
        "trigger": {"type": "schedule", "schedule": {"type": "cron", "expr": "0 10 * * *"}},
        "action": {"kind": "care", "channel": "webhook"},
        "limits": {"max_per_day": 20},
    }
    item = {
        "rule": rule,
        "health": {"failures": 0},
        "version": 1,
        "updated_at": "2026-12-07T10:00:00+00:00",
        "waiting_for_a_slot": 1186,
    }

    def shown(waiting: int) -> str:
        html = page.render(
            listing=_Fetched({"items": [item | {"waiting_for_a_slot": waiting}]}),
            summary=_Fetched({"rows": []}),
            report=_Fetched({"groups": []}),
            session=_Reader(),
            outcomes={},
            held_back={},
            last_fired={},
            rule_outcomes={},
            trigger_words=lambda trigger: "daily",
            outcome_days=30,
        )
        return " ".join(re.sub(r"<[^>]+>", " ", html).split())

    assert "at most 20 a day 1,186 waiting for a slot" in shown(1186)
    assert "waiting for a slot" not in shown(0)
    assert "at most 20 a day" in shown(0)


def test_a_span_of_hours_reads_in_days_once_it_is_two_days_long() -> None:
    assert readable_hours(5.5) == "5.5 hours"
    assert readable_hours(144.0) == "6 days"  # a median time to resolve, or a wait past target
    assert readable_hours(None) == "—"
