"""Conditions: a small JSON expression over a customer card, or over an event's ``data``.

An expression is an object with exactly one operator::

    {"all": [expr, ...]}            every one holds (an empty list holds)
    {"any": [expr, ...]}            at least one holds (an empty list does not)
    {"not": expr}
    {"eq": [path, value]}           also "ne"; value may be null ("is missing")
    {"gt": [path, value]}           also "gte", "lt", "lte"
    {"between": [path, low, high]}  low <= field <= high
    {"in": [path, [value, ...]]}    for a list field (tags): any element is in the list
    {"has_tag": "vip"}              "vip" is one of the card's tags (the backend's and
                                    those rules set; an event's data: its ``tags``)
    {"exists": path}                the field is present and not null
    {"some": [path, expr]}          some element of a list of objects (an order's ``items``,
                                    ``preferences.last_items``) passes expr over its fields
    {"bought": {"category": "tea", "within_days": 365}}
                                    the card's preferences list a purchase in the category
                                    (or ``"brand": ...``), the last one at most within_days
                                    days ago (optional; without it: ever, up to as_of)
    {"bought": {"launch": "category", "within_days": 365}}
                                    the same for any category (or ``"brand"``) of the
                                    broadcast being launched (never holds outside a launch)
    {"never_bought": {"brand": "Y"}}  exactly ``not bought``, same arguments

An event rule's conditions may name the card as it stood before the event, ``before.<path>``
(any card field: ``before.strategy``, ``before.value.orders``): a customer thanked for an
order as what they were when they placed it, not what the order made of them. It is missing
(every comparison fails, ``exists`` does not hold) for a customer the event is the first news
of; other triggers have no event, and no ``before``.

``within_days`` counts back from the launch's moment in a broadcast, else from the card's
``as_of``. For example, new teas for tea buyers who do not buy brand Y::

    {"all": [{"bought": {"launch": "category", "within_days": 365}},
             {"never_bought": {"brand": "Y"}}]}

A ``path`` is a dotted name of a known field: ``tier``, ``value.orders``, ``rfm.segment``,
``profile.attributes.<any key>``. Example::

    {"all": [{"eq": ["tier", "key"]}, {"gt": ["value.orders", 3]},
             {"not": {"has_tag": "do_not_disturb"}}]}

Values are compared by the field's type, not by their JSON spelling: decimal strings
(``"123.40"``) compare as numbers, ISO datetimes as instants (a naive one is UTC; a bare date
is its midnight), dates as dates, and an enum field rejects a value it can never hold. A
missing or null field fails every ordering comparison (``gt``, ``between``...); ``ne`` is
exactly ``not eq``.

:func:`validate` lists every error of an expression, each naming where it is and which
field; :func:`compile_expr` turns a valid one into a closure, built once per rule so that
matching a change costs a few dictionary look-ups per rule.
"""

from __future__ import annotations

import difflib
import json
import operator
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import Enum
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from shared.card import Card
from shared.events import PAYLOAD_OF, EventType

Predicate = Callable[[Mapping[str, Any]], bool]
Getter = Callable[[Mapping[str, Any]], Any]
Convert = Callable[[Any], Any]
Kind = Literal[
    "str",
    "int",
    "float",
    "decimal",
    "datetime",
    "date",
    "bool",
    "tags",
    "list",
    "map",
    "entry",
    "object",
]

# "entry" is one key of a map (profile.attributes.<key>): text, or a number when compared
# with a number.
_ORDERED = frozenset({"int", "float", "decimal", "datetime", "date", "entry"})
_SCALAR = _ORDERED | {"str", "bool"}
_COMBINATORS = ("all", "any", "not")
_COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "between", "in")
_PREFERENCES = ("bought", "never_bought")
OPERATORS = (*_COMBINATORS, *_COMPARISONS, "has_tag", "exists", "some", *_PREFERENCES)
TAGS_PATH = "profile.tags"
PREFERENCES_PATH = "preferences.categories"
# The key under which a broadcast launch hands its content to conditions and templates,
# beside the card's own fields: {"at": ISO instant, "categories": [...], "brands": [...],
# "items": [...]}. Not a card field: scoring never writes it.
LAUNCH_KEY = "_launch"
_BOUGHT_BY = {"category": "categories", "brand": "brands"}
MAX_WITHIN_DAYS = 36_500
# Every tag on a card: the backend's own and those rules set (has_tag reads this one).
CARD_TAGS_PATH = "tags"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """The type of one known field; ``choices`` lists the only values an enum field holds."""

    kind: Kind
    choices: frozenset[str] | None = None
    item: Schema | None = None  # a list of objects: the fields of each element


@dataclass(frozen=True, slots=True)
class Schema:
    """The fields an expression may name. A ``map`` field admits any ``<path>.<key>`` below it."""

    name: str
    fields: Mapping[str, FieldSpec]

    def lookup(self, path: str) -> FieldSpec | None:
        """The spec of ``path``, or None when it is not a known field."""
        spec = self.fields.get(path)
        if spec is not None:
            return spec
        parent, _, key = path.rpartition(".")
        if key and self.fields.get(parent, FieldSpec("str")).kind == "map":
            return FieldSpec("entry")
        return None


class ConditionError(ValueError):
    """An expression that does not validate; ``errors`` holds one message per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@cache
def event_schema(event_type: EventType) -> Schema:
    """The fields of an event type's ``data``, read off its payload model in shared.events."""
    return Schema(f"{event_type.value} data", _fields_of(PAYLOAD_OF[event_type]))


def _fields_of(model: type[BaseModel], prefix: str = "") -> dict[str, FieldSpec]:
    out: dict[str, FieldSpec] = {}
    for name, info in model.model_fields.items():
        tp = _unwrap(info.annotation)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            out[prefix + name] = FieldSpec("object")
            out.update(_fields_of(tp, f"{prefix}{name}."))
        elif get_origin(tp) is list and _is_model(element := _unwrap(get_args(tp)[0])):
            out[prefix + name] = FieldSpec(
                "list", item=Schema(f"{prefix}{name} element", _fields_of(element))
            )
        else:
            out[prefix + name] = _spec_of(tp)
    return out


def _unwrap(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            rest = [a for a in get_args(tp) if a is not type(None)]
            tp = rest[0] if len(rest) == 1 else Any
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


_PY_TYPES = (bool, int, float, Decimal, datetime, date, str)
_PY_KINDS = ("bool", "int", "float", "decimal", "datetime", "date", "str")


def _spec_of(tp: Any) -> FieldSpec:
    origin = get_origin(tp)
    if origin is list:
        return FieldSpec("tags" if _unwrap(get_args(tp)[0]) is str else "list")
    if origin is dict:
        return FieldSpec("map")
    if origin is Literal and all(isinstance(v, str) for v in get_args(tp)):
        return FieldSpec("str", frozenset(get_args(tp)))
    if isinstance(tp, type):
        if issubclass(tp, Enum):
            return FieldSpec("str", frozenset(str(m.value) for m in tp))
        # bool before int and datetime before date: each is a subclass of the other.
        for base, kind in zip(_PY_TYPES, _PY_KINDS, strict=True):
            if issubclass(tp, base):
                return FieldSpec(kind)  # type: ignore[arg-type]
    return FieldSpec("list")  # unknown shapes: only "exists" applies


# The card's fields, read off the contract scoring publishes (shared.card): what a condition
# may name and how each compares.
CARD = Schema("card", _fields_of(Card))
# An event rule's conditions may also name the card as it stood before the event
# (``before.strategy``: what the customer was when they ordered), under this key beside the
# card's own fields. Not a card field: scoring never writes it; missing for a customer the
# event is the first news of.
BEFORE_KEY = "before"
EVENT_CARD = Schema(
    "card",
    {
        **CARD.fields,
        BEFORE_KEY: FieldSpec("object"),
        **{f"{BEFORE_KEY}.{path}": spec for path, spec in CARD.fields.items()},
    },
)


def named_paths(expr: Any) -> set[str]:
    """The card paths ``expr`` names (``strategy``, ``value.orders``, ``before.strategy``)."""
    if not isinstance(expr, dict) or len(expr) != 1:
        return set()
    ((op, arg),) = expr.items()
    if op in ("all", "any"):
        return set().union(*(named_paths(e) for e in arg)) if isinstance(arg, list) else set()
    if op == "not":
        return named_paths(arg)
    if op == "exists":
        path: Any = arg
    elif op in _COMPARISONS or op == "some":
        path = arg[0] if isinstance(arg, list) and arg else None
    else:
        return set()
    return {path} if isinstance(path, str) else set()


def names_before(expr: Any) -> bool:
    """Whether ``expr`` names a field of the card before the event (``before.<field>``)."""
    return any(
        path == BEFORE_KEY or path.startswith(BEFORE_KEY + ".") for path in named_paths(expr)
    )


def judged_before(expr: Any, fields: Iterable[str]) -> tuple[str, ...]:
    """Those of ``fields`` that ``expr`` reads only as they stood before the event: it names
    ``before.<field>`` and not the field itself. ``maintain-thanks`` judges a customer by
    ``before.strategy`` (what they were when they ordered), so its action serves that
    strategy, not the one the order made of them."""
    paths = named_paths(expr)
    return tuple(f for f in fields if f"{BEFORE_KEY}.{f}" in paths and f not in paths)


# Converters turn a card value into something comparable, or None when it is missing or
# malformed: a bad value in one card must fail the comparison, not crash the consumer.


def to_decimal(v: Any) -> Decimal | None:
    """A decimal from a decimal string or a number; None if missing or not a number."""
    if v is None or isinstance(v, bool):
        return None
    try:
        return v if isinstance(v, Decimal) else Decimal(v if isinstance(v, str | int) else str(v))
    except (InvalidOperation, ValueError, TypeError):
        return None


def to_datetime(v: Any) -> datetime | None:
    """An aware datetime from an ISO string, a date or a datetime (naive means UTC)."""
    if isinstance(v, str):
        try:
            v = datetime.fromisoformat(v)
        except ValueError:
            return None
    elif isinstance(v, date) and not isinstance(v, datetime):
        v = datetime(v.year, v.month, v.day)
    if not isinstance(v, datetime):
        return None
    return v if v.tzinfo is not None else v.replace(tzinfo=UTC)


def to_date(v: Any) -> date | None:
    """A date from an ISO date (or the date part of an ISO datetime), a date or a datetime."""
    if isinstance(v, str):
        try:
            return date.fromisoformat(v[:10])
        except ValueError:
            return None
    if isinstance(v, datetime):
        return v.date()
    return v if isinstance(v, date) else None


def _to_number(v: Any) -> Any:
    return v if isinstance(v, int | float) and not isinstance(v, bool) else None


_CONVERT: dict[str, Convert] = {
    "decimal": to_decimal,
    "datetime": to_datetime,
    "date": to_date,
    "int": _to_number,
    "float": _to_number,
    "str": lambda v: v if isinstance(v, str) else None,
    "entry": lambda v: v if isinstance(v, str) else None,
    "bool": lambda v: v if isinstance(v, bool) else None,
}


def _literal(spec: FieldSpec, value: Any) -> Any:
    """``value`` as the field's type; raises ValueError saying what was expected."""
    if value is None:
        return None
    kind = spec.kind
    if kind in ("int", "float", "decimal") or (kind == "entry" and not isinstance(value, str)):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"expected a number, got {json.dumps(value)}")
        number = to_decimal(value)
        if number is None or not number.is_finite():
            raise ValueError(f"expected a number, got {json.dumps(value)}")
        if kind in ("decimal", "entry"):
            return number
        return float(number) if isinstance(value, str) else value
    if kind in ("datetime", "date"):
        parsed = (to_datetime if kind == "datetime" else to_date)(value)
        if not isinstance(value, str) or parsed is None:
            raise ValueError(
                f'expected an ISO {kind} such as "2024-05-17", got {json.dumps(value)}'
            )
        return parsed
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {json.dumps(value)}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {json.dumps(value)}")
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"{value!r} is not one of {', '.join(sorted(spec.choices))}")
    return value


def _getter(path: str) -> Getter:
    # Specialised by depth: this runs for every comparison of every candidate rule. Cards are
    # decoded JSON, so nested objects are plain dicts.
    parts = path.split(".")
    if len(parts) == 1:
        return operator.methodcaller("get", parts[0])
    if len(parts) == 2:
        a, b = parts

        def get2(card: Mapping[str, Any]) -> Any:
            v = card.get(a)
            return v.get(b) if isinstance(v, dict) else None

        return get2

    def get_n(card: Mapping[str, Any]) -> Any:
        v: Any = card
        for p in parts:
            if not isinstance(v, Mapping):
                return None
            v = v.get(p)
        return v

    return get_n


_ORDER_OPS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


class _Compiler:
    """One pass that both reports errors and builds closures, so validate and compile agree."""

    def __init__(self, schema: Schema, strict: bool = False) -> None:
        self.schema = schema
        self.strict = strict  # also refuse what compiles but could only misbehave
        self.errors: list[str] = []

    def fail(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def node(self, expr: Any, where: str) -> Predicate | None:
        if not isinstance(expr, dict) or len(expr) != 1:
            got = f"{len(expr)} keys" if isinstance(expr, dict) else json.dumps(expr)[:60]
            self.fail(where, f"expected an object with exactly one operator, got {got}")
            return None
        ((op, arg),) = expr.items()
        here = f"{where}.{op}" if where != "$" else op
        if op in ("all", "any"):
            return self.group(op, arg, here)
        if op == "not":
            inner = self.node(arg, here)
            return None if inner is None else lambda c: not inner(c)
        if op == "has_tag":
            return self.has_tag(arg, here)
        if op == "exists":
            if self.field(arg, here) is None:
                return None
            get = _getter(arg)
            return lambda c: get(c) is not None
        if op in _COMPARISONS:
            return self.compare(op, arg, here)
        if op == "some":
            return self.some(arg, here)
        if op in _PREFERENCES:
            bought = self.bought(arg, here)
            if bought is None or op == "bought":
                return bought
            return lambda c: not bought(c)
        self.fail(where, f"unknown operator {op!r}; use one of {', '.join(OPERATORS)}")
        return None

    def group(self, op: str, arg: Any, here: str) -> Predicate | None:
        if not isinstance(arg, list):
            self.fail(here, "expected a list of expressions")
            return None
        parts = [self.node(e, f"{here}[{i}]") for i, e in enumerate(arg)]
        preds = [p for p in parts if p is not None]
        if len(preds) != len(parts):
            return None
        return _all(preds) if op == "all" else _any(preds)

    def field(self, path: Any, here: str) -> FieldSpec | None:
        if not isinstance(path, str):
            self.fail(here, f'expected a field path such as "value.orders", got {json.dumps(path)}')
            return None
        spec = self.schema.lookup(path)
        if spec is None:
            close = difflib.get_close_matches(path, list(self.schema.fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.fail(here, f"unknown {self.schema.name} field {path!r}{hint}")
        return spec

    def has_tag(self, tag: Any, here: str) -> Predicate | None:
        if CARD_TAGS_PATH in self.schema.fields:
            path = CARD_TAGS_PATH
        elif TAGS_PATH in self.schema.fields:
            path = TAGS_PATH
        else:
            self.fail(here, f"has_tag needs {TAGS_PATH}, which {self.schema.name} does not have")
            return None
        if not isinstance(tag, str) or not tag:
            self.fail(here, f"expected a tag name, got {json.dumps(tag)}")
            return None
        get, own = _getter(path), _getter(TAGS_PATH)
        # A card written before rules could tag has no ``tags``: its backend's tags are all.
        return lambda c: tag in ((get(c) if path in c else own(c)) or ())

    def some(self, arg: Any, here: str) -> Predicate | None:
        if not isinstance(arg, list) or len(arg) != 2:
            self.fail(here, "expected [path, expression]")
            return None
        spec = self.field(arg[0], here)
        if spec is None:
            return None
        if spec.item is None:
            self.fail(here, f"{arg[0]!r} is not a list of objects")
            return None
        inner = _Compiler(spec.item, self.strict)
        pred = inner.node(arg[1], f"{here}[1]")
        self.errors.extend(inner.errors)
        if pred is None:
            return None
        get = _getter(arg[0])

        def some(c: Mapping[str, Any]) -> bool:
            found = get(c)
            if not isinstance(found, list):
                return False
            return any(isinstance(x, Mapping) and pred(x) for x in found)

        return some

    def bought(self, arg: Any, here: str) -> Predicate | None:
        if self.schema.lookup(PREFERENCES_PATH) is None:
            self.fail(here, f"needs the card's preferences, which {self.schema.name} lacks")
            return None
        if not isinstance(arg, dict):
            self.fail(
                here, 'expected {"category": name} or {"brand": name}, "within_days" optional'
            )
            return None
        unknown = sorted(set(arg) - {"category", "brand", "launch", "within_days"})
        if unknown:
            self.fail(here, f"unknown key {unknown[0]!r}; use category, brand, launch, within_days")
            return None
        which = [k for k in ("category", "brand", "launch") if k in arg]
        if len(which) != 1:
            self.fail(here, "name exactly one of category, brand or launch")
            return None
        (key,) = which
        name = arg[key]
        if key == "launch":
            if name not in _BOUGHT_BY:
                self.fail(f"{here}.launch", 'expected "category" or "brand"')
                return None
        elif not isinstance(name, str) or not name:
            self.fail(f"{here}.{key}", f"expected a {key} name, got {json.dumps(name)}")
            return None
        within = arg.get("within_days")
        if within is not None and (
            isinstance(within, bool)
            or not isinstance(within, int)
            or not 1 <= within <= MAX_WITHIN_DAYS
        ):
            self.fail(
                f"{here}.within_days",
                f"expected a whole number of days from 1 to {MAX_WITHIN_DAYS}, "
                f"got {json.dumps(within)}",
            )
            return None
        section = _BOUGHT_BY[name if key == "launch" else key]
        fixed = None if key == "launch" else (name,)
        return _bought(section, fixed, within)

    def compare(self, op: str, arg: Any, here: str) -> Predicate | None:
        arity = 3 if op == "between" else 2
        if not isinstance(arg, list) or len(arg) != arity:
            shape = "[path, low, high]" if op == "between" else "[path, value]"
            self.fail(here, f"expected {shape}")
            return None
        spec = self.field(arg[0], here)
        if spec is None:
            return None
        path = arg[0]
        is_list = spec.kind in ("tags", "list")
        if spec.kind not in _SCALAR and not (op == "in" and spec.kind == "tags"):
            use = {"tags": "use has_tag or in", "map": f"name a key: {path}.<key>"}
            self.fail(here, f"{path!r} is of kind {spec.kind}; {use.get(spec.kind, 'use exists')}")
            return None
        if op in ("gt", "gte", "lt", "lte", "between") and spec.kind not in _ORDERED:
            self.fail(here, f"{path!r} is of kind {spec.kind} and cannot be ordered")
            return None
        literals = arg[1] if op == "in" else arg[1:]
        if op == "in" and not isinstance(literals, list):
            self.fail(here, f"expected a list of values for {path!r}")
            return None
        item_spec = FieldSpec("str") if is_list else spec
        try:
            values = [_literal(item_spec, v) for v in literals]
        except ValueError as exc:
            self.fail(here, f"{path!r}: {exc}")
            return None
        if None in values and op not in ("eq", "ne", "in"):
            self.fail(here, f"{path!r}: null can only be compared with eq, ne or in")
            return None
        if self.strict and op in ("gt", "gte", "lt", "lte", "between"):
            # An attribute is read as a number or as text by its literals: a number beside a
            # text could not be ordered against a card's value (TypeError while matching).
            kinds = {"number" if isinstance(v, Decimal | int | float) else "text" for v in values}
            if len(kinds) > 1:
                self.fail(here, f"{path!r}: mixes a number and a text; use one type")
                return None
        return _build(op, _getter(path), _conversion(spec, values), values, is_list)


def _bought(section: str, fixed: tuple[str, ...] | None, within: int | None) -> Predicate:
    """Whether the card lists a purchase in one of the names (``fixed``, else the launch's own
    names of ``section``), at most ``within`` days before the launch (else the card's as_of)."""

    def holds(card: Mapping[str, Any]) -> bool:
        prefs = card.get("preferences")
        table = prefs.get(section) if isinstance(prefs, Mapping) else None
        if not isinstance(table, Mapping):
            return False
        launch = card.get(LAUNCH_KEY)
        names = fixed
        if names is None:
            found = launch.get(section) if isinstance(launch, Mapping) else None
            names = tuple(found) if isinstance(found, list) else ()
        since = None
        if within is not None:
            now = to_datetime(launch.get("at") if isinstance(launch, Mapping) else None)
            now = now or to_datetime(card.get("as_of"))
            if now is None:
                return False
            since = now - timedelta(days=within)
        for n in names:
            entry = table.get(n)
            if not isinstance(entry, Mapping):
                continue
            if since is None:
                return True
            last = to_datetime(entry.get("last_at"))
            if last is not None and last >= since:
                return True
        return False

    return holds


# Unrolled for the common short lists: a generator per evaluation costs more than the
# comparisons it wraps.
def _all(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda c: a(c) and b(c)
    if len(preds) == 3:
        a, b, d = preds
        return lambda c: a(c) and b(c) and d(c)
    return lambda c: all(p(c) for p in preds)


def _any(preds: list[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda c: a(c) or b(c)
    return lambda c: any(p(c) for p in preds)


def _conversion(spec: FieldSpec, values: list[Any]) -> Convert:
    if spec.kind == "entry" and any(isinstance(v, Decimal) for v in values):
        return to_decimal  # an attribute compared with a number is read as a number
    return _CONVERT.get(spec.kind, lambda v: v)


def _build(op: str, get: Getter, conv: Convert, values: list[Any], is_list: bool) -> Predicate:
    if op == "in":
        allowed = frozenset(values)
        if is_list:
            return lambda c: not allowed.isdisjoint(get(c) or ())
        return lambda c: conv(get(c)) in allowed
    if op == "between":
        low, high = values
        return lambda c: (v := conv(get(c))) is not None and low <= v <= high
    (lit,) = values
    if op == "eq":
        return lambda c: conv(get(c)) == lit
    if op == "ne":
        return lambda c: conv(get(c)) != lit
    cmp = _ORDER_OPS[op]
    return lambda c: (v := conv(get(c))) is not None and cmp(v, lit)


def validate(expr: Any, schema: Schema = CARD) -> list[str]:
    """Every error of ``expr`` as ``"<where>: <what>"``, naming the field; empty when valid."""
    compiler = _Compiler(schema, strict=True)
    compiler.node(expr, "$")
    return compiler.errors


def compile_expr(expr: Any, schema: Schema = CARD) -> Predicate:
    """``expr`` as a closure over a card (or event data); raises :class:`ConditionError`."""
    compiler = _Compiler(schema)
    predicate = compiler.node(expr, "$")
    if compiler.errors or predicate is None:
        raise ConditionError(compiler.errors)
    return predicate
