"""Conditions over purchase preferences (bought, never_bought) and into lists (some)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.outreach.core.conditions import (
    LAUNCH_KEY,
    compile_expr,
    event_schema,
    validate,
)
from shared.events import EventType


def card(**categories: str) -> dict[str, Any]:
    """A card as_of 2026-06-01 whose customer last bought each category at the given day."""
    return {
        "as_of": "2026-06-01T00:00:00Z",
        "preferences": {
            "categories": {
                n: {"spend": "10.00", "last_at": f"{d}T12:00:00Z"} for n, d in categories.items()
            },
            "brands": {"Y": {"spend": "5.00", "last_at": "2020-01-01T00:00:00Z"}}
            if "y" in categories
            else {},
        },
    }


def test_bought_in_a_category_within_days_counts_back_from_as_of() -> None:
    recent = compile_expr({"bought": {"category": "tea", "within_days": 365}})
    assert recent(card(tea="2025-09-01"))
    assert not recent(card(tea="2025-05-01"))  # 13 months before as_of
    assert not recent(card(cups="2026-05-01"))
    assert compile_expr({"bought": {"category": "tea"}})(card(tea="2010-01-01"))


def test_never_bought_a_brand() -> None:
    never = compile_expr({"never_bought": {"brand": "Y"}})
    assert never(card(tea="2026-01-01"))
    assert not never(card(tea="2026-01-01", y="2020-01-01"))


def test_launch_categories_and_the_launch_moment() -> None:
    pred = compile_expr({"bought": {"launch": "category", "within_days": 30}})
    c = card(tea="2026-06-20")
    assert not pred(c)  # outside a launch there are no launch categories
    launched = {**c, LAUNCH_KEY: {"at": "2026-07-01T00:00:00Z", "categories": ["tea"]}}
    assert pred(launched)
    late = {**c, LAUNCH_KEY: {"at": "2026-09-01T00:00:00Z", "categories": ["tea"]}}
    assert not pred(late)  # within_days counts back from the launch, not the card's as_of
    other = {**c, LAUNCH_KEY: {"at": "2026-07-01T00:00:00Z", "categories": ["cups"]}}
    assert not pred(other)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ({"bought": {"category": "tea", "brand": "Y"}}, "exactly one of category, brand"),
        ({"bought": {"category": ""}}, "bought.category: expected a category name"),
        ({"bought": {"brand": "Y", "within_days": 0}}, "bought.within_days: expected a whole"),
        ({"never_bought": {"launch": "sku"}}, 'never_bought.launch: expected "category"'),
        ({"bought": {"category": "tea", "days": 3}}, "unknown key 'days'"),
        ({"bought": "tea"}, "bought: expected"),
    ],
)
def test_bad_preference_conditions_name_where_and_why(expr: Any, message: str) -> None:
    errors = validate(expr)
    assert errors and message in errors[0], errors


def test_event_filters_look_into_an_orders_items() -> None:
    schema = event_schema(EventType.ORDER_PLACED)
    expr = {"some": ["items", {"eq": ["category", "tea"]}]}
    assert validate(expr, schema) == []
    pred = compile_expr(expr, schema)
    assert pred({"items": [{"sku": "a", "category": "cups"}, {"sku": "b", "category": "tea"}]})
    assert not pred({"items": [{"sku": "a", "category": "cups"}]})
    assert not pred({"items": []})
    assert validate({"some": ["items", {"eq": ["colour", "red"]}]}, schema) == [
        "some[1].eq: unknown items element field 'colour'"
    ]
    assert "not a list of objects" in validate({"some": ["currency", {"eq": ["x", 1]}]}, schema)[0]
    assert "lacks" in validate({"bought": {"category": "tea"}}, schema)[0]


def test_a_template_lists_the_launched_items_in_the_customers_categories() -> None:
    from services.outreach.core.launch import LaunchContent, LaunchItem, launch_view
    from services.outreach.core.templates import Template, build_context, check, render

    content = LaunchContent(
        items=[
            LaunchItem(sku="t-9", category="tea", name="Jasmine"),
            LaunchItem(sku="c-9", category="cups", name="Mug"),
            LaunchItem(sku="b-9", category="books", brand="Y", name="Atlas"),
        ]
    )
    view = launch_view(content, datetime(2026, 6, 1, tzinfo=UTC))
    body = (
        "{% for i in launch.items_for_customer %}{{ i.name }};{% endfor %}"
        "{{ launch.all_items|length }}"
    )
    template = Template(body=body)
    assert check(template) == []
    tea_buyer = {**card(tea="2026-01-01"), LAUNCH_KEY: view}
    assert render(template, build_context(tea_buyer)) == ("", "Jasmine;3")
    y_buyer = {**card(y="2020-01-01"), LAUNCH_KEY: view}  # bought books... and brand Y
    assert render(template, build_context(y_buyer)) == ("", "Atlas;3")
    # Outside a launch the lists are empty, and the card never shows the launch.
    assert render(template, build_context(card(tea="2026-01-01"))) == ("", "0")
    assert LAUNCH_KEY not in build_context(tea_buyer)["card"]
