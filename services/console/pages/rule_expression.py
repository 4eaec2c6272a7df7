"""One test of a rule as the editor's form shows it: a field, an operator and a value.

A rule holds two such expressions: its conditions over the customer's card
(``value.orders is at least 2``) and an event trigger's filters over the event's data
(``severity equals high``). Outreach's expression language (``services.outreach.core.
conditions``) has more (``all``, ``any``, ``not``, ``between`` ...): an expression the form
cannot show as one test is edited as JSON, and is described as JSON in the rules list.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OPERATORS = {
    "eq": "equals",
    "ne": "does not equal",
    "gt": "is more than",
    "gte": "is at least",
    "lt": "is less than",
    "lte": "is at most",
    "in": "is one of",
    "exists": "is present",
    "has_tag": "has the tag",
}
# An event's data holds no tags: a filter tests its fields only.
FILTER_OPERATORS = {op: words for op, words in OPERATORS.items() if op != "has_tag"}
_COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte")


def typed(text: str) -> Any:
    """A value as typed: a number, true/false, null or a quoted string as JSON; other text
    as it is (``key``, ``high``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text.strip()


def shown(value: Any) -> str:
    """A value as the form shows it, typed back as the same value (:func:`typed`): text as
    it is, unless it would read as something else (``"50"``, ``"null"``: quoted)."""
    return value if isinstance(value, str) and typed(value) == value else json.dumps(value)


def expression(op: str, field: str, value: str) -> dict[str, Any] | None:
    """The expression of one test (None: the form holds none). ``in`` takes its values
    comma-separated (``low, medium``); a tag test names no field (its value is the tag)."""
    if op == "has_tag":
        return {"has_tag": value.strip()} if value.strip() else None
    field = field.strip()
    if not field:
        return None
    if op == "exists":
        return {"exists": field}
    if op == "in":
        return {"in": [field, [typed(v) for v in value.split(",") if v.strip()]]}
    return {op: [field, typed(value)]}


def one_test(expr: Any) -> tuple[str, str, str] | None:
    """``(op, field, value)`` of an expression the form shows as one test; None for any
    other (edited as JSON)."""
    if not isinstance(expr, dict) or len(expr) != 1:
        return None
    [(op, arg)] = expr.items()
    if op == "has_tag" and isinstance(arg, str):
        return op, "", arg
    if op == "exists" and isinstance(arg, str):
        return op, arg, ""
    if not (isinstance(arg, list) and len(arg) == 2 and isinstance(arg[0], str)):
        return None
    if op == "in" and isinstance(arg[1], list) and all(_plain(v) for v in arg[1]):
        return op, arg[0], ", ".join(shown(v) for v in arg[1])
    if op in _COMPARISONS:
        return op, arg[0], shown(arg[1])
    return None


def _plain(value: Any) -> bool:
    # A value a comma-separated list can carry back unchanged.
    return not isinstance(value, (dict, list)) and "," not in shown(value)


def described(expr: Any) -> str:
    """An expression in words for a list (``severity is one of low, medium``); JSON when it
    is not one test."""
    test = one_test(expr)
    if test is None:
        return json.dumps(expr, separators=(", ", ": "))
    op, field, value = test
    if op == "has_tag":
        return f"has the tag {value}"
    if op == "exists":
        return f"{field} is present"
    return f"{field} {OPERATORS[op]} {value}"


@dataclass
class DataFilter:
    """An event's filters as the form holds them (an event trigger's, a goal's): one test of
    the event's data, or JSON, which replaces the test when given. Its controls are named
    ``{prefix}_field``, ``{prefix}_op``, ``{prefix}_value`` and ``{prefix}s_json``."""

    field: str = ""
    op: str = "eq"
    value: str = ""
    as_json: str = ""

    @classmethod
    def of_fields(cls, get: Callable[[str], str], prefix: str) -> DataFilter:
        return cls(
            field=get(f"{prefix}_field"),
            op=get(f"{prefix}_op") or "eq",
            value=get(f"{prefix}_value"),
            as_json=get(f"{prefix}s_json"),
        )

    @classmethod
    def of_filters(cls, filters: Any) -> DataFilter:
        """The form of stored filters: one test when they are one (and not a tag test, which
        an event's data cannot take), else JSON."""
        test = one_test(filters)
        if test is not None and test[0] != "has_tag":
            op, field, value = test
            return cls(field=field, op=op, value=value)
        return cls(as_json=json.dumps(filters, indent=2) if filters else "")

    def filters(self) -> tuple[Any, str | None]:
        """The filters (None: none, every such event counts) and the form's own error (JSON
        that does not parse)."""
        if self.as_json.strip():
            try:
                return json.loads(self.as_json), None
            except ValueError as e:
                return None, f"the JSON expression does not parse: {e}"
        return expression(self.op, self.field, self.value), None
