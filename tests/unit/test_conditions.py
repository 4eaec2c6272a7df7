"""Conditions: the JSON syntax, errors that name the field, and evaluation by field type."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.outreach.core.conditions import (
    CARD,
    EVENT_CARD,
    ConditionError,
    Predicate,
    compile_expr,
    event_schema,
    judged_before,
    names_before,
    validate,
)
from services.outreach.core.templates import SAMPLE_CARD
from shared.events import EventType


@lru_cache(maxsize=512)
def _compiled(key: str) -> Predicate:
    return compile_expr(json.loads(key))


def evaluate(expr: Any, card: Mapping[str, Any]) -> bool:
    """Whether ``expr`` holds for ``card``, compiled once per distinct expression."""
    return _compiled(json.dumps(expr, sort_keys=True))(card)


def card(**changes: Any) -> dict[str, Any]:
    """The sample card with dotted-path changes: card(**{"value.orders": 3})."""
    out: dict[str, Any] = copy.deepcopy(dict(SAMPLE_CARD))
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = out
        for p in parents:
            node = node[p]
        node[leaf] = value
    return out


# --- syntax and validation -------------------------------------------------------------


def test_a_valid_expression_has_no_errors() -> None:
    expr = {
        "all": [
            {"eq": ["tier", "key"]},
            {"gt": ["value.orders", 3]},
            {"any": [{"has_tag": "vip"}, {"in": ["rfm.segment", ["champions", "loyal"]]}]},
            {"not": {"exists": "complaints.last_at"}},
            {"between": ["value.lifetime_spend", "100", "5000.50"]},
            {"lte": ["value.last_order_at", "2025-01-01T00:00:00Z"]},
            {"eq": ["profile.attributes.store", "london-1"]},
        ]
    }
    assert validate(expr) == []


def test_an_unknown_field_is_named_with_a_suggestion() -> None:
    errors = validate({"all": [{"eq": ["tier", "key"]}, {"gt": ["value.order", 3]}]})
    assert errors == ["all[1].gt: unknown card field 'value.order' (did you mean 'value.orders'?)"]


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ({"eq": ["tier", "gold"]}, "eq: 'tier': 'gold' is not one of key, low, regular"),
        ({"gt": ["value.orders", "many"]}, "gt: 'value.orders': expected a number, got \"many\""),
        ({"gt": ["value.orders", True]}, "gt: 'value.orders': expected a number, got true"),
        (
            {"lt": ["value.last_order_at", "yesterday"]},
            "lt: 'value.last_order_at': expected an ISO datetime",
        ),
        ({"gt": ["tier", "key"]}, "gt: 'tier' is of kind str and cannot be ordered"),
        ({"eq": ["profile.tags", "vip"]}, "eq: 'profile.tags' is of kind tags; use has_tag or in"),
        (
            {"eq": ["profile.attributes", "x"]},
            "'profile.attributes' is of kind map; name a key: profile.attributes.<key>",
        ),
        ({"gt": ["rfm", 1]}, "gt: 'rfm' is of kind object; use exists"),
        ({"gt": ["value.orders", None]}, "null can only be compared with eq, ne or in"),
        ({"between": ["value.orders", 1]}, "between: expected [path, low, high]"),
        ({"in": ["tier", "key"]}, "in: expected a list of values for 'tier'"),
        ({"has_tag": ""}, 'has_tag: expected a tag name, got ""'),
        ({"exists": 3}, 'exists: expected a field path such as "value.orders", got 3'),
        ({"like": ["tier", "k%"]}, "$: unknown operator 'like'"),
        ({"eq": ["tier", "key"], "gt": ["value.orders", 1]}, "$: expected an object with exactly"),
        ({"all": {"eq": ["tier", "key"]}}, "all: expected a list of expressions"),
        ({"eq": ["profile.consent.email", "yes"]}, "expected true or false"),
    ],
)
def test_errors_say_where_which_field_and_why(expr: dict[str, Any], error: str) -> None:
    errors = validate(expr)
    assert len(errors) == 1, errors
    assert error in errors[0]


def test_every_error_is_reported_at_once() -> None:
    errors = validate({"any": [{"eq": ["stage", "dead"]}, {"not": {"exists": "rfm.segmnt"}}]})
    assert [e.split(":")[0] for e in errors] == ["any[0].eq", "any[1].not.exists"]


def test_compile_refuses_an_invalid_expression_with_its_errors() -> None:
    with pytest.raises(ConditionError) as raised:
        compile_expr({"eq": ["teir", "key"]})
    assert raised.value.errors == ["eq: unknown card field 'teir' (did you mean 'tier'?)"]


def test_event_filters_are_checked_against_the_event_payload() -> None:
    schema = event_schema(EventType.COMPLAINT_OPENED)
    assert validate({"eq": ["severity", "high"]}, schema) == []
    assert validate({"eq": ["severity", "urgent"]}, schema) == [
        "eq: 'severity': 'urgent' is not one of high, low, medium"
    ]
    (error,) = validate({"gt": ["amount", 1]}, schema)
    assert "unknown complaint.opened data field 'amount'" in error
    assert validate({"has_tag": "vip"}, schema) == [
        "has_tag: has_tag needs profile.tags, which complaint.opened data does not have"
    ]
    orders = event_schema(EventType.ORDER_PAID)
    assert validate({"gte": ["amount", "50"]}, orders) == []
    assert validate({"eq": ["currency", "EUR"]}, orders) == []
    customer = event_schema(EventType.CUSTOMER_UPDATED)
    assert validate({"eq": ["consent.marketing", True]}, customer) == []


# --- evaluation ------------------------------------------------------------------------


def test_decimal_strings_compare_as_numbers() -> None:
    c = card(**{"value.lifetime_spend": "123.40"})
    assert evaluate({"eq": ["value.lifetime_spend", "123.4"]}, c)
    assert evaluate({"eq": ["value.lifetime_spend", 123.4]}, c)
    assert evaluate({"gt": ["value.lifetime_spend", 99]}, c)  # "123.40" > "99" as text is false
    assert not evaluate({"gt": ["value.lifetime_spend", "123.41"]}, c)
    assert evaluate({"between": ["value.lifetime_spend", "123.40", "123.40"]}, c)
    assert evaluate({"in": ["value.lifetime_spend", ["1", "123.400"]]}, c)


@given(
    a=st.decimals(min_value=-(10**9), max_value=10**9, places=4, allow_nan=False),
    b=st.decimals(min_value=-(10**9), max_value=10**9, places=4, allow_nan=False),
)
def test_decimal_ordering_agrees_with_decimal_arithmetic(a: Decimal, b: Decimal) -> None:
    c = {"value": {"spend_30d": str(a)}}
    assert evaluate({"gt": ["value.spend_30d", str(b)]}, c) is (a > b)
    assert evaluate({"lte": ["value.spend_30d", str(b)]}, c) is (a <= b)
    assert evaluate({"eq": ["value.spend_30d", str(b)]}, c) is (a == b)


def test_datetimes_compare_as_instants_whatever_their_offset() -> None:
    c = card(**{"value.last_order_at": "2025-05-01T10:00:00+02:00"})  # 08:00 UTC
    assert evaluate({"eq": ["value.last_order_at", "2025-05-01T08:00:00Z"]}, c)
    assert evaluate({"lt": ["value.last_order_at", "2025-05-01T09:00:00+00:00"]}, c)
    assert evaluate({"gt": ["value.last_order_at", "2025-05-01"]}, c)  # a bare date: midnight
    assert evaluate({"lt": ["value.last_order_at", "2025-05-01T08:30:00"]}, c)  # naive: UTC
    assert not evaluate({"gt": ["value.last_order_at", "2025-05-02"]}, c)


@given(
    moment=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1)),
    offset_hours=st.integers(min_value=-12, max_value=14),
    delta=st.integers(min_value=-3600, max_value=3600),
)
def test_datetime_ordering_ignores_the_offset_spelling(
    moment: datetime, offset_hours: int, delta: int
) -> None:
    stamp = moment.replace(tzinfo=UTC)
    shown = stamp.astimezone(timezone(timedelta(hours=offset_hours)))
    literal = (stamp + timedelta(seconds=delta)).isoformat()
    c = {"updated_at": shown.isoformat()}
    assert evaluate({"lt": ["updated_at", literal]}, c) is (delta > 0)


def test_dates_compare_as_dates() -> None:
    c = card(**{"profile.birthday": "1990-05-17"})
    assert evaluate({"lt": ["profile.birthday", "2000-01-01"]}, c)
    assert evaluate({"eq": ["profile.birthday", "1990-05-17"]}, c)


def test_has_tag_in_and_exists() -> None:
    c = card(**{"profile.tags": ["vip", "newsletter"], "tags": ["vip", "newsletter"], "rfm": None})
    assert evaluate({"has_tag": "vip"}, c)
    assert not evaluate({"has_tag": "press"}, c)
    assert evaluate({"in": ["profile.tags", ["press", "newsletter"]]}, c)
    assert not evaluate({"in": ["profile.tags", ["press"]]}, c)
    assert not evaluate({"exists": "rfm"}, c)
    assert not evaluate({"exists": "rfm.segment"}, c)  # under a null object
    assert evaluate({"exists": "value.orders"}, c)
    assert not evaluate({"has_tag": "vip"}, card(**{"profile.tags": None, "tags": None}))


def test_has_tag_sees_the_tags_rules_set_beside_the_backends() -> None:
    c = card(**{"profile.tags": ["vip"], "rule_tags": ["big-spender"]})
    c["tags"] = ["vip", "big-spender"]
    assert evaluate({"has_tag": "big-spender"}, c)
    assert evaluate({"has_tag": "vip"}, c)
    assert evaluate({"in": ["rule_tags", ["big-spender"]]}, c)
    assert not evaluate({"in": ["profile.tags", ["big-spender"]]}, c)
    # A card written before rules could tag: the backend's tags are all it has.
    older = card(**{"profile.tags": ["vip"]})
    del older["tags"], older["rule_tags"]
    assert evaluate({"has_tag": "vip"}, older)
    assert not evaluate({"has_tag": "big-spender"}, older)


def test_missing_or_null_fails_ordering_and_ne_is_not_eq() -> None:
    c = card(**{"value.purchase_interval_days": None, "tier": None})
    assert not evaluate({"gt": ["value.purchase_interval_days", 0]}, c)
    assert not evaluate({"lte": ["value.purchase_interval_days", 0]}, c)
    assert not evaluate({"between": ["value.purchase_interval_days", 0, 100]}, c)
    assert evaluate({"eq": ["tier", None]}, c)
    assert evaluate({"ne": ["tier", "low"]}, c)
    assert evaluate({"in": ["tier", ["key", None]]}, c)


def test_combinators() -> None:
    c = card(tier="key", **{"value.orders": 5})
    key, many, low = {"eq": ["tier", "key"]}, {"gt": ["value.orders", 3]}, {"eq": ["tier", "low"]}
    assert evaluate({"all": [key, many]}, c)
    assert not evaluate({"all": [key, many, low]}, c)
    assert evaluate({"any": [low, low, many]}, c)
    assert evaluate({"not": low}, c)
    assert evaluate({"all": []}, c)
    assert not evaluate({"any": []}, c)
    assert evaluate({"all": [key, many, {"not": low}, {"any": [many]}]}, c)


def test_attributes_are_free_form_and_compare_as_numbers_with_numbers() -> None:
    c = card(**{"profile.attributes": {"store": "london-1", "visits": "12"}})
    assert evaluate({"eq": ["profile.attributes.store", "london-1"]}, c)
    assert evaluate({"gt": ["profile.attributes.visits", 10]}, c)
    assert not evaluate({"gt": ["profile.attributes.store", 10]}, c)  # not a number: false
    assert not evaluate({"exists": "profile.attributes.missing"}, c)


def test_a_malformed_card_value_fails_the_comparison_instead_of_raising() -> None:
    c = card(**{"value.lifetime_spend": "n/a", "value.last_order_at": "soon", "value.orders": "3"})
    assert not evaluate({"gt": ["value.lifetime_spend", 0]}, c)
    assert not evaluate({"gt": ["value.last_order_at", "2000-01-01"]}, c)
    assert not evaluate({"gt": ["value.orders", 0]}, c)
    assert not evaluate({"gt": ["value.orders", 0]}, {"value": "not an object"})


def test_the_card_schema_matches_the_sample_card() -> None:
    for path, spec in CARD.fields.items():
        node: Any = SAMPLE_CARD
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, path
            node = node[part]
        if spec.choices is not None:
            assert node in spec.choices, path


def test_an_expression_names_the_card_before_the_event_only_through_a_path() -> None:
    assert names_before({"eq": ["before.strategy", "maintain"]})
    assert names_before({"all": [{"gt": ["value.orders", 2]}, {"not": {"exists": "before"}}]})
    assert not names_before({"eq": ["strategy", "before.strategy"]})  # a value, not a path
    assert not names_before({"eq": ["strategy", "maintain"]})
    # Every card field has its before-the-event twin, compared the same way.
    assert EVENT_CARD.lookup("before.value.lifetime_spend") == CARD.lookup("value.lifetime_spend")
    assert EVENT_CARD.lookup("before.strategy") == CARD.lookup("strategy")
    assert CARD.lookup("before.strategy") is None


def test_a_rule_judges_a_customer_by_a_field_before_the_event_only_when_it_reads_no_other() -> None:
    fields = ("tier", "strategy")
    assert judged_before({"eq": ["before.strategy", "maintain"]}, fields) == ("strategy",)
    # Reads both: the strategy it chose them for is the card's after the event.
    both = {"all": [{"eq": ["strategy", "develop"]}, {"ne": ["before.strategy", "maintain"]}]}
    assert judged_before(both, fields) == ()
    nested = {"any": [{"not": {"in": ["before.tier", ["low"]]}}, {"exists": "before.strategy"}]}
    assert judged_before(nested, fields) == ("tier", "strategy")
    assert judged_before({"eq": ["before.value.orders", 1]}, fields) == ()
    assert judged_before(None, fields) == ()
