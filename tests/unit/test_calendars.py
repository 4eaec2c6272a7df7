"""Holiday calendars: the CN festivals' dates (checked against dates written here, from the
published calendars), which calendar a customer keeps, and schedules on holidays and on
profile attributes the shop declares dates."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from services.outreach.core.calendars import (
    Calendars,
    calendar_of,
    holiday_on,
    holidays_in,
    region_of,
)
from services.outreach.core.policy import Policy
from services.outreach.core.rule_pack import default_pack
from services.outreach.core.rules import Rule, template_errors
from services.outreach.core.schedules import (
    CalendarSchedule,
    DaysAfterSchedule,
    holiday_of,
    next_due,
    occurrence_key,
)
from services.outreach.core.templates import build_context, render
from shared.events import CustomerData

# The published dates (State Council holiday notices; the Chinese lunar calendar).
CN_2027 = {
    "Spring Festival": date(2027, 2, 6),
    "Lantern Festival": date(2027, 2, 20),
    "Qingming Festival": date(2027, 4, 5),
    "Dragon Boat Festival": date(2027, 6, 9),
    "Qixi Festival": date(2027, 8, 8),
    "Mid-Autumn Festival": date(2027, 9, 15),
    "National Day": date(2027, 10, 1),
    "Double Ninth Festival": date(2027, 10, 8),
}
CN_2028 = {
    "Spring Festival": date(2028, 1, 26),
    "Lantern Festival": date(2028, 2, 9),
    "Qingming Festival": date(2028, 4, 4),
    "Dragon Boat Festival": date(2028, 5, 28),
    "Qixi Festival": date(2028, 8, 26),
    "Mid-Autumn Festival": date(2028, 10, 3),
    "National Day": date(2028, 10, 1),
    "Double Ninth Festival": date(2028, 10, 26),
}


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def card(**profile: Any) -> dict[str, Any]:
    return {"customer_id": "c1", "profile": profile}


def rule(trigger: dict[str, Any]) -> Rule:
    return Rule.model_validate(
        {
            "id": "r",
            "name": "r",
            "trigger": {"type": "schedule", **trigger},
            "action": {"kind": "greeting", "channel": "webhook", "template": {"body": "hi"}},
        }
    )


@pytest.mark.parametrize(("year", "expected"), [(2027, CN_2027), (2028, CN_2028)])
def test_the_cn_calendar_gives_each_festival_on_its_first_day(
    year: int, expected: dict[str, date]
) -> None:
    assert {h.name: h.day for h in holidays_in("CN", year)} == expected
    # Once per festival: the Spring Festival's later days off and observed days are not listed.
    assert len(holidays_in("CN", year)) == 8


def test_the_spring_and_mid_autumn_festivals_of_2027_and_2028() -> None:
    days = {(h.name, h.day.year): h.day for y in (2027, 2028) for h in holidays_in("CN", y)}
    assert days[("Spring Festival", 2027)] == date(2027, 2, 6)
    assert days[("Mid-Autumn Festival", 2027)] == date(2027, 9, 15)
    assert days[("Spring Festival", 2028)] == date(2028, 1, 26)
    assert days[("Mid-Autumn Festival", 2028)] == date(2028, 10, 3)


def test_taiwan_keeps_its_own_national_day_not_chinas() -> None:
    tw = {h.day for h in holidays_in("TW", 2027)}
    assert date(2027, 10, 10) in tw and date(2027, 2, 6) in tw and date(2027, 9, 15) in tw
    assert date(2027, 10, 1) not in tw


def test_the_region_of_a_locale() -> None:
    assert region_of("zh-TW") == "TW"
    assert region_of("zh_Hant_HK") == "HK"
    assert region_of("zh-CN") == "CN"
    assert region_of("zh") == "CN"
    assert region_of("en-us") == "US"
    assert region_of("en") is None


def test_a_customers_calendar_country_then_locale_then_the_shops_default() -> None:
    shop = Calendars(countries=["CN", "HK", "TW", "FR"], default="FR")
    assert calendar_of(card(country="TW", locale="zh-CN"), shop) == "TW"
    assert calendar_of(card(locale="zh-TW"), shop) == "TW"
    assert calendar_of(card(locale="zh-HK"), shop) == "HK"
    assert calendar_of(card(locale="zh"), shop) == "CN"
    assert calendar_of(card(locale="en"), shop) == "FR"  # no region: the shop's default
    assert calendar_of(card(), shop) == "FR"
    assert calendar_of(card(country="US"), shop) == "FR"  # not one of the shop's calendars
    assert calendar_of(card(), Calendars()) is None


def test_the_shops_calendars_are_countries_tend_knows() -> None:
    with pytest.raises(ValidationError, match="not a country"):
        Calendars(countries=["CN", "XX"])
    with pytest.raises(ValidationError, match="must be one of countries"):
        Calendars(countries=["CN"], default="TW")


def test_a_profile_country_is_an_iso_code() -> None:
    assert CustomerData(country="CN").country == "CN"
    with pytest.raises(ValidationError, match="ISO 3166-1 alpha-2"):
        CustomerData(country="China")
    with pytest.raises(ValidationError, match="ISO 3166-1 alpha-2"):
        CustomerData(country="EU")


def test_a_customer_in_china_is_greeted_on_the_spring_festival_at_nine_local() -> None:
    greet = rule({"kind": "calendar", "name": "festivals", "calendar": "customer"})
    ctx = Policy().schedule_context
    shanghai = card(country="CN", timezone="Asia/Shanghai")
    # 09:00 in Shanghai is 01:00 UTC.
    assert next_due(greet, shanghai, utc(2027, 1, 1), context=ctx) == utc(2027, 2, 6, 1)
    assert next_due(greet, shanghai, utc(2027, 2, 6, 1), context=ctx) == utc(2027, 2, 20, 1)
    assert next_due(greet, shanghai, utc(2027, 9, 1), context=ctx) == utc(2027, 9, 15, 1)
    taipei = card(locale="zh-TW", timezone="Asia/Taipei")
    # After Confucius' Birthday (09-28): Taiwan's National Day, 10-10, not China's 10-01.
    assert next_due(greet, taipei, utc(2027, 9, 29), context=ctx) == utc(2027, 10, 10, 1)


def test_the_default_packs_holiday_greeting_keeps_fixed_dates_for_customers_without_calendar() -> (
    None
):
    [greet] = [r for r in default_pack() if r.id == "holiday-greeting"]
    ctx = Policy().schedule_context
    assert next_due(greet, card(timezone="UTC"), utc(2027, 12, 1), context=ctx) == utc(
        2027, 12, 25, 9
    )
    # A customer in China is greeted on the Spring Festival, not on Christmas morning.
    cn = card(country="CN", timezone="UTC")
    assert next_due(greet, cn, utc(2027, 12, 1), context=ctx) == utc(2028, 1, 26, 9)


def test_a_calendar_trigger_names_a_known_calendar() -> None:
    with pytest.raises(ValidationError, match="neither 'customer' nor a country code"):
        CalendarSchedule.model_validate(
            {"type": "schedule", "kind": "calendar", "name": "x", "calendar": "Mars"}
        )
    with pytest.raises(ValidationError, match="give a calendar, dates, or both"):
        CalendarSchedule.model_validate({"type": "schedule", "kind": "calendar", "name": "x"})
    with pytest.raises(ValidationError, match="dates go with"):
        CalendarSchedule.model_validate(
            {
                "type": "schedule",
                "kind": "calendar",
                "name": "x",
                "calendar": "CN",
                "dates": ["01-01"],
            }
        )


def test_an_anniversary_of_a_date_attribute_fires_at_nine_in_the_customers_zone() -> None:
    wedding = rule({"kind": "anniversary", "since": "attributes.wedding"})
    ctx = Policy(attribute_types={"wedding": "date", "size": "number"}).schedule_context
    paris = card(timezone="Europe/Paris", attributes={"wedding": "2015-06-20"})
    assert next_due(wedding, paris, utc(2027, 1, 1), context=ctx) == utc(2027, 6, 20, 7)
    # Not declared a date: no schedule; not a date for this customer: none for them either.
    assert next_due(wedding, paris, utc(2027, 1, 1), context=Policy().schedule_context) is None
    for bad in ("20 June 2015", "2015-02-30", "2015-06-20 and more", ""):
        odd = card(timezone="Europe/Paris", attributes={"wedding": bad})
        assert next_due(wedding, odd, utc(2027, 1, 1), context=ctx) is None


def test_days_after_a_date_attribute() -> None:
    renewal = rule({"kind": "days_after", "since": "profile.attributes.renewal", "days": 0})
    ctx = Policy(attribute_types={"renewal": "date"}).schedule_context
    c = card(timezone="Asia/Tokyo", attributes={"renewal": "2027-03-01"})
    assert next_due(renewal, c, utc(2027, 2, 1), context=ctx) == utc(2027, 3, 1, 0)


def test_a_schedule_since_names_a_date_field_or_an_attribute() -> None:
    ok = DaysAfterSchedule.model_validate(
        {"type": "schedule", "kind": "days_after", "since": "attributes.renewal", "days": 1}
    )
    assert ok.since == "profile.attributes.renewal"
    with pytest.raises(ValidationError, match="not a date or datetime field"):
        DaysAfterSchedule.model_validate(
            {"type": "schedule", "kind": "days_after", "since": "profile.name", "days": 1}
        )


def test_days_of_remembrance_are_not_greeted_unless_a_rule_asks() -> None:
    greet = rule({"kind": "calendar", "name": "festivals", "calendar": "customer"})
    ctx = Policy().schedule_context
    shanghai = card(country="CN", timezone="Asia/Shanghai")
    # Qingming (2027-04-05) is a day for the graves: the next greeting is the Dragon Boat.
    assert next_due(greet, shanghai, utc(2027, 3, 1), context=ctx) == utc(2027, 6, 9, 1)
    taipei = card(country="TW", timezone="Asia/Taipei")
    # Peace Memorial Day (02-28) is not greeted either.
    memorial = [h for h in holidays_in("TW", 2027) if h.name == "Peace Memorial Day"]
    assert memorial and memorial[0].solemn
    due = next_due(greet, taipei, utc(2027, 2, 27), context=ctx)
    assert due is not None and due.date() != date(2027, 2, 28)
    # A rule that means to mark them says so.
    mark = rule({"kind": "calendar", "name": "remember", "calendar": "CN", "solemn_days": True})
    assert next_due(mark, shanghai, utc(2027, 3, 1), context=ctx) == utc(2027, 4, 5, 1)


# --- the holiday's name in a template ---------------------------------------------------


def test_a_holiday_firing_names_its_holiday_and_other_firings_none() -> None:
    greet = rule(
        {"kind": "calendar", "name": "festivals", "calendar": "customer", "dates": ["12-25"]}
    )
    ctx = Policy().schedule_context
    mei = card(country="CN", timezone="Asia/Shanghai")
    due = next_due(greet, mei, utc(2027, 9, 1), context=ctx)
    assert due is not None
    key = occurrence_key(greet, mei, due, context=ctx)
    assert holiday_of(greet, mei, key, context=ctx) == {
        "name": "Mid-Autumn Festival",
        "date": "2027-09-15",
        "calendar": "CN",
    }
    # A customer who keeps no calendar is greeted on the rule's own dates: no holiday named.
    assert holiday_of(greet, card(timezone="UTC"), "2027-12-25", context=ctx) is None
    # A named calendar, and a day that begins none of its holidays.
    us = rule({"kind": "calendar", "name": "us", "calendar": "US"})
    assert holiday_of(us, mei, "2027-07-04", context=ctx) == {
        "name": "Independence Day",
        "date": "2027-07-04",
        "calendar": "US",
    }
    assert holiday_of(us, mei, "2027-07-05", context=ctx) is None
    # Not a calendar trigger.
    birthday = rule({"kind": "birthday"})
    assert holiday_of(birthday, mei, "2027-09-15", context=ctx) is None


def test_a_solemn_day_is_named_only_for_a_rule_that_asks_for_them() -> None:
    assert holiday_on("CN", date(2027, 4, 5)) is None
    solemn = holiday_on("CN", date(2027, 4, 5), solemn=True)
    assert solemn is not None and solemn.name == "Qingming Festival"


def test_the_default_holiday_greeting_says_which_holiday() -> None:
    [greet] = [r for r in default_pack() if r.id == "holiday-greeting"]
    ctx = Policy().schedule_context
    wei = {"customer_id": "wei", "profile": {"name": "Wei", "country": "CN"}}
    holiday = holiday_of(greet, wei, "2027-09-15", context=ctx)
    assert render(greet.action.template, build_context(wei, holiday=holiday)) == (
        "Happy Mid-Autumn Festival",
        "Happy Mid-Autumn Festival, Wei, from all of us.",
    )
    sam = {"customer_id": "sam", "profile": {"name": "Sam"}}
    assert render(greet.action.template, build_context(sam)) == (
        "Season's greetings",
        "Season's greetings, Sam, from all of us.",
    )


def test_a_calendar_rules_template_is_checked_with_and_without_a_holiday() -> None:
    def saved(trigger: dict[str, Any], body: str) -> list[tuple[str, str]]:
        return template_errors(
            Rule.model_validate(
                {
                    "id": "r",
                    "name": "r",
                    "trigger": {"type": "schedule", "kind": "calendar", "name": "h", **trigger},
                    "action": {
                        "kind": "greeting",
                        "channel": "webhook",
                        "template": {"body": body},
                    },
                }
            )
        )

    named = "Happy {{ holiday.name }} ({{ holiday.date }}, {{ holiday.calendar }})"
    assert saved({"calendar": "CN"}, named) == []
    assert saved({"calendar": "customer"}, named) == []
    # With fixed dates too, some customers get no holiday: the template must allow for it.
    [(field, why)] = saved({"calendar": "customer", "dates": ["12-25"]}, named)
    assert field == "action.template.body" and "name" in why
    guarded = "{% if holiday %}Happy {{ holiday.name }}{% else %}Greetings{% endif %}"
    assert saved({"calendar": "customer", "dates": ["12-25"]}, guarded) == []
    assert saved({"dates": ["12-25"]}, guarded) == []
    [(_, why)] = saved({"dates": ["12-25"]}, named)
    assert "name" in why
