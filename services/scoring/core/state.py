"""A customer's facts, merged from events so that arrival order and duplicates never matter.

The state is not a running total: it is the set of facts the events asserted, each keyed by
its identity (an order's events by ``event_id``, complaints by id, visits by ``visit_id``,
profile fields by ``(occurred_at, event_id)``). Merging a fact is a set union or a
last-writer-wins register, both commutative and idempotent, so the state after a set of
events is the same whatever order they arrived in. Every figure on the card is derived from
these facts at read time (:mod:`services.scoring.core.card`), which is also what lets ``as_of``
replay history.

Times are kept as integer microseconds since the Unix epoch (UTC): exact, cheap to compare and
JSON-native. Amounts are ``Decimal`` in memory and strings in JSON, so nothing is rounded.

Visits are the one bounded fact: ids and times are kept for ``visit_retention_days`` behind the
latest visit; older visits survive only as a count. A re-delivered visit older than that window
is caught by the inbox (unique ``event_id``), not here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

import orjson

from services.scoring.core.lifecycle import Walk
from services.scoring.settings import ScoringSettings
from shared.events import (
    ComplaintData,
    CustomerData,
    Envelope,
    EventType,
    OptOutData,
    OrderData,
    TagData,
    VisitData,
)

STATE_VERSION = 1
DAY_US = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_END = 2**62  # a moment after every event
# A customer with this many orders keeps each order's JSON between writes: below it, writing
# them all again costs less than the memory of keeping them would be worth in a state cache.
_ORDERS_KEPT_AS_JSON_FROM = 20

PLACED, PAID, REFUNDED, CANCELLED = "placed", "paid", "refunded", "cancelled"
OPENED, RESOLVED = "opened", "resolved"
_ORDER_KIND = {
    EventType.ORDER_PLACED: PLACED,
    EventType.ORDER_PAID: PAID,
    EventType.ORDER_REFUNDED: REFUNDED,
    EventType.ORDER_CANCELLED: CANCELLED,
}
_ZERO = Decimal(0)
# The customer's own opt-out, a profile register like any other (the latest word wins):
# ``{"how": ...}`` while they are unsubscribed, None once it is lifted.
UNSUBSCRIBED = "consent.unsubscribed"
# A tag a rule set, one register per tag (``rule_tag.<tag>``): ``{"rule_id": ...}`` while it
# is set, None once a rule took it off. Kept apart from ``tags``, the backend's own list, which
# the backend replaces whole: its replacing never touches these.
RULE_TAG = "rule_tag."

ProfileScalar = str | bool | None
ProfileValue = ProfileScalar | list[str] | dict[str, str]


def kept_json(text: bytes) -> orjson.Fragment:
    """JSON written once and kept (on a state, its ledger or its card's head), in a copy of
    its own size: orjson's output keeps the 4 KiB buffer it was written in, which held by
    every cached customer would triple what the cache takes."""
    return orjson.Fragment(bytes(memoryview(text)))


def to_micros(moment: datetime) -> int:
    """Exact microseconds since the epoch of an aware datetime."""
    return (moment - _EPOCH) // _ONE_US


def from_micros(us: int) -> datetime:
    """The UTC datetime of :func:`to_micros`'s output."""
    return _EPOCH + timedelta(microseconds=us)


class Line(NamedTuple):
    """One item of a placed or paid order, as the event listed it."""

    sku: str
    quantity: int
    unit_price: Decimal
    category: str | None = None
    brand: str | None = None


class OrderEvent(NamedTuple):
    kind: str
    at: int
    amount: Decimal | None = None  # placed/paid: the order total; refunded: the amount refunded
    outstanding: Decimal | None = None  # placed/paid only
    # placed/paid only: the items the event listed (the card's purchase preferences).
    items: tuple[Line, ...] = ()


class ComplaintEvent(NamedTuple):
    status: str
    at: int
    # As the event said; None in states written before severities were kept (a rebuild
    # recovers them from the events).
    severity: str | None = None
    category: str | None = None


class ProfileEntry(NamedTuple):
    at: int
    event_id: str
    value: ProfileValue


class Purchase(NamedTuple):
    """One live order as of a moment: placed and/or paid, not cancelled."""

    order_id: str
    at: int  # the earliest of its placed/paid times
    total: Decimal
    refunded: Decimal
    outstanding: Decimal
    net: Decimal  # total less refunds, never below zero


class Follower(Protocol):
    """A cache of figures over the state's facts that an order event may carry on
    (:class:`services.scoring.core.ledger.Ledger`)."""

    def follow(self, state: CustomerState, order_id: str, at: int, was_live: bool) -> bool:
        """Carry the cache on after an event of ``order_id`` at ``at`` (``was_live``: the
        order was a purchase before it); False: drop it."""
        ...


@dataclass(slots=True)
class CustomerState:
    """Everything scoring knows about one customer, as facts (see the module docstring)."""

    customer_id: str
    last_event_at: int | None = None
    orders: dict[str, dict[str, OrderEvent]] = field(default_factory=dict)
    complaints: dict[str, dict[str, ComplaintEvent]] = field(default_factory=dict)
    visits: dict[str, int] = field(default_factory=dict)
    visits_older: int = 0
    visits_older_last_at: int | None = None
    profile: dict[str, ProfileEntry] = field(default_factory=dict)
    # The tier each complaint is held to (its response-time target): the customer's tier on
    # the first card scored with the complaint known, recorded by the consumer
    # (:meth:`hold_complaints`). Not an event's fact, but kept with them so the card, the
    # complaints table and a rebuild agree; a complaint missing here is held to the card's tier.
    complaint_tiers: dict[str, str | None] = field(default_factory=dict)
    # Not a fact: the lifecycle walk over these facts' purchase days as the card last made it,
    # which the next card carries on from when purchases only add later days (never stored,
    # never compared, checked against the purchase days each time it is used).
    walk: Walk | None = field(default=None, compare=False, repr=False)
    # Not a fact either: the card's profile section as last built from ``profile``, dropped
    # whenever a profile write wins (the one place ``profile`` changes).
    profile_card: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    # Not a fact: the card's profile, tags and rule tags as JSON, written from
    # ``profile_card`` (:func:`services.scoring.core.card.score`, which checks it still is).
    card_head: object | None = field(default=None, compare=False, repr=False)
    # Not a fact: the live purchases and their running figures as the last card read them
    # (:mod:`services.scoring.core.ledger`), carried on by each order event that only adds a
    # later purchase or changes the latest, and dropped by any other (never stored).
    ledger: Follower | None = field(default=None, compare=False, repr=False)
    # Not a fact: each order's events as JSON text, as :meth:`to_json` last wrote them,
    # dropped when an event of the order is merged (never read back, never compared).
    orders_json: dict[str, orjson.Fragment] = field(default_factory=dict, compare=False, repr=False)

    def copy(self) -> CustomerState:
        """An independent copy (:func:`apply` updates the state it is given)."""
        return CustomerState(
            customer_id=self.customer_id,
            last_event_at=self.last_event_at,
            orders={k: dict(v) for k, v in self.orders.items()},
            complaints={k: dict(v) for k, v in self.complaints.items()},
            visits=dict(self.visits),
            visits_older=self.visits_older,
            visits_older_last_at=self.visits_older_last_at,
            profile=dict(self.profile),
            complaint_tiers=dict(self.complaint_tiers),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-native form (for a JSONB column); :meth:`from_json` reads it back exactly."""
        return self._document(
            {
                oid: {eid: _order_event_json(e) for eid, e in events.items()}
                for oid, events in self.orders.items()
            }
        )

    def _document(self, orders: dict[str, Any]) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": STATE_VERSION,
            "customer_id": self.customer_id,
            "last_event_at": self.last_event_at,
            "orders": orders,
            "complaints": {
                cid: {eid: _complaint_event_json(e) for eid, e in events.items()}
                for cid, events in self.complaints.items()
            },
            "visits": {
                "recent": dict(self.visits),
                "older": self.visits_older,
                "older_last_at": self.visits_older_last_at,
            },
            "profile": {name: [p.at, p.event_id, p.value] for name, p in self.profile.items()},
        }
        if self.complaint_tiers:  # absent, as in states written before it existed
            doc["complaint_tiers"] = dict(self.complaint_tiers)
        return doc

    def _order_json(self, order_id: str) -> orjson.Fragment:
        # Written once per change of the order (as the JSON text :meth:`to_json` embeds): a
        # batch writes the whole state of a customer whose orders mostly did not change.
        written = self.orders_json.get(order_id)
        if written is None:
            events = {eid: _order_event_json(e) for eid, e in self.orders[order_id].items()}
            written = kept_json(orjson.dumps(events, option=orjson.OPT_SORT_KEYS))
            self.orders_json[order_id] = written
        return written

    def to_json(self) -> bytes:
        """UTF-8 JSON of :meth:`to_dict`."""
        if len(self.orders) < _ORDERS_KEPT_AS_JSON_FROM:
            doc = self.to_dict()
        else:
            doc = self._document({oid: self._order_json(oid) for oid in self.orders})
        # Sorted keys: the same facts always serialise to the same bytes.
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, raw: bytes | str | Mapping[str, Any]) -> CustomerState:
        """Read what :meth:`to_json` or :meth:`to_dict` wrote."""
        doc: Mapping[str, Any] = raw if isinstance(raw, Mapping) else orjson.loads(raw)
        if doc.get("v") != STATE_VERSION:
            raise ValueError(f"unknown customer state version {doc.get('v')!r}")
        visits = doc["visits"]
        return cls(
            customer_id=doc["customer_id"],
            last_event_at=doc["last_event_at"],
            orders={
                oid: {eid: _order_event_from(e) for eid, e in events.items()}
                for oid, events in doc["orders"].items()
            },
            complaints={
                cid: {eid: ComplaintEvent(*e[:4]) for eid, e in events.items()}
                for cid, events in doc["complaints"].items()
            },
            visits=dict(visits["recent"]),
            visits_older=visits["older"],
            visits_older_last_at=visits["older_last_at"],
            profile={name: ProfileEntry(p[0], p[1], p[2]) for name, p in doc["profile"].items()},
            complaint_tiers=dict(doc.get("complaint_tiers", {})),
        )

    def hold_complaints(self, tier: str | None) -> None:
        """Hold every complaint not yet held to a tier to ``tier`` (the customer's tier on the
        card just scored): a complaint keeps the target of the tier it was raised under."""
        for complaint_id in self.complaints:
            if complaint_id not in self.complaint_tiers:
                self.complaint_tiers[complaint_id] = tier

    # -- reading the facts at a moment -------------------------------------------------------

    def purchases(self, as_of: int) -> list[Purchase]:
        """Live orders at ``as_of`` (micros), in purchase order (see :meth:`purchase_of`)."""
        out: list[Purchase] = []
        for order_id in self.orders:
            purchase = self.purchase_of(order_id, as_of)
            if purchase is not None:
                out.append(purchase)
        out.sort(key=lambda p: (p.at, p.order_id))
        return out

    def purchase_of(self, order_id: str, as_of: int) -> Purchase | None:
        """The order ``order_id`` as a purchase at ``as_of`` (micros); None when it is not live.

        Placed and paid are one purchase whose moment is the earlier of the two and whose
        total and outstanding balance come from the later; refunds up to ``as_of`` reduce it;
        a cancellation up to ``as_of`` removes it, and so do refunds of its whole total: an
        order the customer gave back is not an order.
        """
        zero = _ZERO
        first_at = -1
        latest: tuple[int, int, str] | None = None
        total = outstanding = refunded = zero
        for event_id, (kind, at, amount, owed, _) in self.orders[order_id].items():
            if at > as_of:
                continue
            if kind == CANCELLED:
                return None
            if kind == REFUNDED:
                refunded += amount or zero
                continue
            if first_at < 0 or at < first_at:
                first_at = at
            # Placed and paid at the same instant: the payment is the later word.
            key = (at, kind == PAID, event_id)
            if latest is None or key > latest:
                latest, total, outstanding = key, amount or zero, owed or zero
        if latest is None or not (refunded < total or total == zero):
            return None
        return Purchase(order_id, first_at, total, refunded, outstanding, total - refunded)

    def latest_order_at(self) -> int | None:
        """The time of the newest order event known (refunds and cancellations included)."""
        return max((e.at for events in self.orders.values() for e in events.values()), default=None)

    def visit_counts(self, as_of: int, window_us: int) -> tuple[int, int, int | None]:
        """``(in_window, total, last_at)`` of visits at ``as_of``; the window ends at ``as_of``.

        Exact for any ``as_of`` from ``visit_retention_days - window`` before the latest visit
        on (the present always is); a replay further back sees older visits only as a count.
        """
        start = as_of - window_us
        recent = [at for at in self.visits.values() if at <= as_of]
        in_window = sum(1 for at in recent if at > start)
        last = max(recent, default=None)
        older_last = self.visits_older_last_at
        if last is None and older_last is not None and older_last <= as_of:
            last = older_last
        return in_window, self.visits_older + len(recent), last

    def no_visits(self) -> bool:
        """Whether no visit was ever recorded (the card's visits section is all zero)."""
        return not self.visits and not self.visits_older and self.visits_older_last_at is None

    def latest_event_at(self, as_of: int) -> int | None:
        """The newest event time up to ``as_of`` (exact for a present ``as_of``; for a replay,
        the newest retained fact, since superseded profile writes and old visits are gone)."""
        if self.last_event_at is None or self.last_event_at <= as_of:
            return self.last_event_at
        times = [e.at for events in self.orders.values() for e in events.values()]
        times += [e.at for events in self.complaints.values() for e in events.values()]
        times += self.visits.values()
        times += [p.at for p in self.profile.values()]
        if self.visits_older_last_at is not None:
            times.append(self.visits_older_last_at)
        return max((t for t in times if t <= as_of), default=None)

    def profile_values(self) -> Iterator[tuple[str, ProfileValue]]:
        """The winning value of every profile field ever set (the latest write, never replayed)."""
        for name, entry in self.profile.items():
            yield name, entry.value


def _order_event_json(e: OrderEvent) -> list[Any]:
    if e.amount is None:
        return [e.kind, e.at]
    if e.outstanding is None:
        return [e.kind, e.at, str(e.amount)]
    if not e.items:  # as in states written before items were kept
        return [e.kind, e.at, str(e.amount), str(e.outstanding)]
    return [e.kind, e.at, str(e.amount), str(e.outstanding), [_line_json(i) for i in e.items]]


def _line_json(line: Line) -> list[Any]:
    return [line.sku, line.quantity, str(line.unit_price), line.category, line.brand]


def _complaint_event_json(e: ComplaintEvent) -> list[Any]:
    if e.severity is None and e.category is None:
        return [e.status, e.at]
    return [e.status, e.at, e.severity, e.category]


def _order_event_from(raw: list[Any]) -> OrderEvent:
    return OrderEvent(
        raw[0],
        raw[1],
        Decimal(raw[2]) if len(raw) > 2 else None,
        Decimal(raw[3]) if len(raw) > 3 else None,
        tuple(Line(i[0], i[1], Decimal(i[2]), i[3], i[4]) for i in raw[4]) if len(raw) > 4 else (),
    )


def apply(
    state: CustomerState | None, event: Envelope, settings: ScoringSettings
) -> tuple[CustomerState, bool]:
    """Merge one event into a customer's state; return the state and whether it changed.

    The state given is updated in place and returned (this runs per event in the consumer;
    copying every state would cost more than the merge itself): call :meth:`CustomerState.copy`
    first to keep the old one. A duplicate, or an event whose facts are already superseded,
    returns ``False``. ``settings`` give how long visits are kept one by one.
    """
    if state is None:
        state = CustomerState(event.customer_id)
    elif state.customer_id != event.customer_id:
        raise ValueError(
            f"event {event.event_id} is for customer {event.customer_id!r}, "
            f"not {state.customer_id!r}"
        )
    at = to_micros(event.occurred_at)
    data = event.data
    if isinstance(data, OrderData):
        ledger, oid = state.ledger, data.order_id
        live = ledger is not None and oid in state.orders and state.purchase_of(oid, _END)
        changed = _apply_order(state, event.event_id, _ORDER_KIND[event.event_type], at, data)
        if changed and ledger is not None and not ledger.follow(state, oid, at, bool(live)):
            state.ledger = None
    elif isinstance(data, ComplaintData):
        status = OPENED if event.event_type is EventType.COMPLAINT_OPENED else RESOLVED
        changed = _apply_complaint(state, event.event_id, status, at, data)
    elif isinstance(data, VisitData):
        retention = settings.visit_retention_days * DAY_US
        changed = _apply_visit(state, at, data.visit_id, retention)
    elif isinstance(data, CustomerData):
        changed = _apply_profile(state, event.event_id, at, data)
    elif isinstance(data, OptOutData):
        how: dict[str, str] | None = {"how": data.how}
        if event.event_type is EventType.CUSTOMER_RESUBSCRIBED:
            how = None
        changed = _apply_register(state, event.event_id, at, UNSUBSCRIBED, how)
    elif isinstance(data, TagData):
        changed = _apply_rule_tags(state, event.event_id, at, data)
    else:
        raise ValueError(f"{event.event_type} is not a fact to merge: the consumer handles it")
    # The newest time ever seen is itself a fact (the card's updated_at): taking the max over
    # every event, applied or superseded, keeps it independent of arrival order.
    if state.last_event_at is None or at > state.last_event_at:
        state.last_event_at = at
        changed = True
    return state, changed


def _apply_order(state: CustomerState, event_id: str, kind: str, at: int, d: OrderData) -> bool:
    events = state.orders.get(d.order_id)
    if events is None:
        events = state.orders[d.order_id] = {}
    elif event_id in events:
        return False
    state.orders_json.pop(d.order_id, None)
    if kind == CANCELLED:
        events[event_id] = OrderEvent(kind, at)
    elif kind == REFUNDED:
        events[event_id] = OrderEvent(kind, at, d.amount)
    else:
        items = tuple(Line(i.sku, i.quantity, i.unit_price, i.category, i.brand) for i in d.items)
        events[event_id] = OrderEvent(kind, at, d.amount, d.outstanding, items)
    return True


def _apply_complaint(
    state: CustomerState, event_id: str, status: str, at: int, d: ComplaintData
) -> bool:
    events = state.complaints.get(d.complaint_id)
    if events is None:
        events = state.complaints[d.complaint_id] = {}
    elif event_id in events:
        return False
    events[event_id] = ComplaintEvent(status, at, d.severity.value, d.category)
    return True


def _apply_visit(state: CustomerState, at: int, visit_id: str, retention_us: int) -> bool:
    visits = state.visits
    known = visits.get(visit_id)
    if known is not None and known <= at:
        return False
    latest = max(visits.values(), default=None)
    if latest is None or at > latest:
        latest = at
    horizon = latest - retention_us
    if known is not None:
        del visits[visit_id]  # re-filed at its earlier time below
    if at < horizon:
        _count_older(state, at)
    else:
        visits[visit_id] = at
    # Visits the new latest pushed out of the window become a count; a visit that belongs in
    # the final window was in every earlier window too, so the result is order-independent.
    for vid in [v for v, t in visits.items() if t < horizon]:
        _count_older(state, visits.pop(vid))
    return True


def _count_older(state: CustomerState, at: int) -> None:
    state.visits_older += 1
    if state.visits_older_last_at is None or at > state.visits_older_last_at:
        state.visits_older_last_at = at


def _apply_profile(state: CustomerState, event_id: str, at: int, d: CustomerData) -> bool:
    changed = False
    for name, value in _profile_fields(d):
        changed |= _apply_register(state, event_id, at, name, value)
    return changed


def _apply_rule_tags(state: CustomerState, event_id: str, at: int, d: TagData) -> bool:
    changed = False
    setter: dict[str, str] = {"rule_id": d.rule_id}
    for tag in d.add:
        changed |= _apply_register(state, event_id, at, RULE_TAG + tag, setter)
    for tag in d.remove:
        changed |= _apply_register(state, event_id, at, RULE_TAG + tag, None)
    return changed


def rule_tags(state: CustomerState) -> list[str]:
    """The tags rules have set on the customer and not taken off, sorted."""
    return sorted(
        name.removeprefix(RULE_TAG)
        for name, entry in state.profile.items()
        if name.startswith(RULE_TAG) and entry.value is not None
    )


def _apply_register(
    state: CustomerState, event_id: str, at: int, name: str, value: ProfileValue
) -> bool:
    current = state.profile.get(name)
    if current is not None and (at, event_id) <= (current.at, current.event_id):
        return False
    state.profile[name] = ProfileEntry(at, event_id, value)
    state.profile_card = None
    return True


def _profile_fields(d: CustomerData) -> Iterator[tuple[str, ProfileValue]]:
    # Only the fields the sender set are facts; an explicit null clears a field.
    for name in d.model_fields_set:
        if name == "consent":
            # Consent per channel is its own register, so an old "email: yes" never overwrites
            # a newer "sms: no". An explicit null withdraws every channel: silence is the safe
            # reading of "unknown" for consent.
            if d.consent is None:
                for channel in ("email", "sms", "marketing"):
                    yield f"consent.{channel}", False
            else:
                for channel in d.consent.model_fields_set:
                    yield f"consent.{channel}", bool(getattr(d.consent, channel))
        elif name == "birthday":
            yield name, d.birthday.isoformat() if d.birthday else None
        elif name == "tags":
            yield name, list(d.tags) if d.tags is not None else None
        elif name == "attributes":
            yield name, dict(d.attributes) if d.attributes is not None else None
        else:
            yield name, getattr(d, name)
