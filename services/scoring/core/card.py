"""Building the score card (:class:`shared.card.Card`, the contract the read API and the
change stream carry) from a customer's facts.

:func:`build_card` is a pure function of a :class:`CustomerState`, a moment and the population
inputs (:class:`Population`). Only events that occurred at or before ``as_of`` count, so a card
for a past ``as_of`` replays history — with one exception: the profile is always the latest one
known, because the state keeps only the winning write of each profile field. (It leaves four
caches on the state, the purchases' ledger (:mod:`services.scoring.core.ledger`), the
lifecycle walk, the profile section and that section with the tags as JSON, which change how
fast the next card is built, never what it says.) :func:`score` is the same card as JSON, for
the consumer, the sweep and the refit: the sections an event seldom changes are embedded as
JSON written when they last changed, the same bytes (``tests/unit/test_golden_cards.py``).

Before any population job has run, ``Population()`` is valid and the card shows everything a
customer's own facts determine (profile, value, stage with the default median gap, complaints,
visits, ``value_score``) and null for what needs the population: ``rfm``, ``prediction``,
``tier`` and ``strategy``. Each appears as soon as its own input does (``prediction`` needs
``bg``, its money figures ``gg``; ``strategy`` needs ``tiers`` and a ``clv_365d``). A prospect
has no ``rfm``, ``prediction`` or ``strategy`` whatever the population: there is nothing to
score yet.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Any, NamedTuple

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from services.scoring.core import (
    complaints,
    lifecycle,
    membership,
    predict,
    rfm,
    tiers,
)
from services.scoring.core.ledger import Ledger
from services.scoring.core.lifecycle import Transition
from services.scoring.core.money import money_json, money_text_of
from services.scoring.core.predict import BgNbdParams, GammaGammaParams
from services.scoring.core.rfm import RfmBreakpoints
from services.scoring.core.state import (
    DAY_US,
    RULE_TAG,
    UNSUBSCRIBED,
    CustomerState,
    from_micros,
    kept_json,
    rule_tags,
    to_micros,
)
from services.scoring.core.tiers import TierBreakpoints
from services.scoring.settings import ScoringSettings
from shared.card import (
    P_ORDER_DAYS,
    Card,
    Consent,
    Profile,
    Segment,
    Stage,
    Strategy,
    Tier,
    Unsubscribed,
)

_EPOCH_DAY = date(1970, 1, 1)


class Population(BaseModel):
    """Every input that depends on the whole customer base, refreshed by a scheduled job.

    Each part is optional so a fresh deployment works: see the module docstring for what a
    card shows while a part is missing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rfm: RfmBreakpoints | None = None
    tiers: TierBreakpoints | None = None
    bg: BgNbdParams | None = None
    gg: GammaGammaParams | None = None
    median_gap_days: Annotated[float, Field(gt=0)] | None = None  # None: the settings default
    fitted_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _usable_params(self) -> Population:
        # Reject parameters the closed forms are undefined for here, once, rather than on
        # every card of every customer.
        bg = self.bg
        if bg is not None and (min(bg.r, bg.alpha, bg.a, bg.b) <= 0 or bg.a == 1):
            raise ValueError("BG/NBD parameters must be positive, with a != 1")
        if self.gg is not None and (min(self.gg.p, self.gg.v) <= 0 or self.gg.q <= 1):
            raise ValueError("Gamma-Gamma parameters must be positive, with q > 1")
        return self

    def median_gap(self, settings: ScoringSettings) -> float:
        """The population median gap between purchase days, or the settings default."""
        return self.median_gap_days or settings.default_median_gap_days


def build_card(
    state: CustomerState, as_of: datetime, population: Population, settings: ScoringSettings
) -> Card:
    """The card of ``state`` at ``as_of`` (timezone-aware) given the population inputs."""
    doc, _, _, _, _ = _document(state, as_of, population, settings)
    return Card.model_validate(doc)


@dataclass(frozen=True, slots=True)
class Scored:
    """A card as the pipeline stores and publishes it: its JSON (a :class:`Card`), the figures
    the customers table filters and sorts on, and the stage transitions up to ``as_of``."""

    customer_id: str
    as_of: datetime
    json: bytes
    stage: Stage
    stage_since: date | None
    next_transition_at: datetime | None
    tier: Tier | None
    strategy: Strategy | None
    segment: Segment | None
    value_score: float
    lifetime_spend: Decimal
    orders: int
    purchase_interval_days: float | None
    last_order_at: datetime | None
    clv: float | None
    p_alive: float | None
    member_tier: str | None  # the membership tier in force (``profile.member_tier``)
    # When time alone may next move the stage or lower the membership tier (the sweep's due
    # time); the card's ``next_transition_at`` is the stage's alone.
    review_at: datetime | None
    # The figures of the card that move with time alone (:func:`moving_of`): a refit sends a
    # card again when they moved from the last card published (:meth:`Moving.moved_from`).
    moving: Moving
    name: str | None
    email: str | None
    search: str | None  # name, email and phone, lower case, for the read API's ``q``
    history: list[Transition]


def score(
    state: CustomerState, as_of: datetime, population: Population, settings: ScoringSettings
) -> Scored:
    """:func:`build_card` for the consumer, the sweep and the refit, which run it for every
    event or customer: the card is written straight to JSON from the figures computed here
    (the same document ``build_card`` validates), and the stage history comes from the same
    walk over the purchase days."""
    doc, stage, history, member, ledger = _document(
        state, as_of, population, settings, encoded=True
    )
    value, rfm_doc, prediction = doc["value"], doc["rfm"], doc["prediction"]
    review_at = stage.next_transition_at
    if member.review_at is not None:
        lowered = from_micros(member.review_at)
        review_at = lowered if review_at is None else min(review_at, lowered)
    head = state.card_head
    assert isinstance(head, Head)  # written by the encoded _document
    moving = moving_of(
        value, rfm_doc, prediction, doc["visits"], doc["complaints"], doc["membership"]
    )
    return Scored(
        customer_id=state.customer_id,
        as_of=as_of,
        json=orjson.dumps(doc, default=money_json, option=orjson.OPT_UTC_Z),
        stage=stage.stage,
        stage_since=stage.since,
        next_transition_at=stage.next_transition_at,
        tier=doc["tier"],
        strategy=doc["strategy"],
        segment=rfm_doc["segment"] if rfm_doc else None,
        value_score=doc["value_score"],
        lifetime_spend=ledger.lifetime,
        orders=value["orders"],
        purchase_interval_days=value["purchase_interval_days"],
        last_order_at=value["last_order_at"],
        clv=prediction["clv_365d"] if prediction else None,
        p_alive=_listed_p_alive(prediction),
        member_tier=member.tier,
        review_at=review_at,
        moving=moving,
        name=head.name,
        email=head.email,
        search=head.search,
        history=history,
    )


class Moving(NamedTuple):
    """The figures of a card that move with time alone, without an event.

    A reader keeps a customer's card as of their last change (outreach's replica, which rules
    read), and these figures move between changes. ``drift``: the trailing windows
    (30/90/365-day spend, visits in the last 30 days, the membership year), the RFM scores
    and the complaints gone overdue, as they are, in one number. ``model``: the model's
    figures as the silence lengthens (P(alive), expected orders in 90 days, ln(1 + CLV), the
    chances of an order), kept as they are and compared with a margin."""

    drift: int
    model: tuple[float | None, ...]

    def moved_from(self, published: Moving | None) -> bool:
        """Whether a reader holding the card last published (``published``; None: none
        known) would find this one moved: a window, score or count differs, or a model
        figure moved by its step since then (P(alive) and the chances of an order by 0.05,
        expected orders by 0.1, the CLV by about 10%). The step is from the published
        value, not a grid, so a figure hovering at a grid line as each refit's parameters
        shift it a little never sends the card out at every refit; a decaying customer's
        card goes out a dozen times over their decline, not every day."""
        if published is None or published.drift != self.drift:
            return True
        if len(published.model) != len(self.model):
            return True
        for n, (was, now) in enumerate(zip(published.model, self.model, strict=True)):
            if was is None or now is None:
                if was is not now:
                    return True
            # A step's worth, within a float's rounding (0.41 - 0.36 is 0.0499...).
            elif abs(now - was) >= _MODEL_STEPS[min(n, len(_MODEL_STEPS) - 1)] - 1e-9:
                return True
        return False


# A model figure's step (:meth:`Moving.moved_from`), by position: P(alive), expected orders
# in 90 days, ln(1 + CLV) (0.1: about 10%), then each chance of an order.
_MODEL_STEPS = (0.05, 0.1, 0.1, 0.05)


def moving_of(
    value: dict[str, Any],
    rfm_doc: dict[str, Any] | None,
    prediction: dict[str, Any] | None,
    visits: Any,
    complaint_section: Any,
    membership: dict[str, Any] | None,
) -> Moving:
    """The card's :class:`Moving` figures. Figures that move every day by their nature
    (``as_of``, ``prediction.age_days``) are left out; sections written ahead (no visits, no
    complaints) say nothing that time moves."""
    parts: list[Any] = [value["spend_30d"], value["spend_90d"], value["spend_365d"]]
    if rfm_doc is not None:
        parts += [rfm_doc["recency"], rfm_doc["frequency"], rfm_doc["monetary"]]
    if isinstance(visits, dict):
        parts.append(visits["last_30d"])
    if isinstance(complaint_section, dict):
        parts.append(complaint_section["overdue"])
    if membership is not None:
        parts += [membership.get("spend_365d"), membership.get("orders_365d")]
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    model: tuple[float | None, ...] = ()
    if prediction is not None:
        p_order = prediction.get("p_order") or {}
        clv = prediction["clv_365d"]
        model = (
            prediction["p_alive"],
            prediction["expected_orders_90d"],
            None if clv is None else math.log1p(max(float(clv), 0.0)),
            *(p_order[k] for k in sorted(p_order)),
        )
    return Moving(int.from_bytes(digest, "big", signed=True), model)


def _listed_p_alive(prediction: dict[str, Any] | None) -> float | None:
    """P(alive) as the customer list shows and sorts by it: the card's (null for a customer
    without a repeat purchase day, see :func:`_prediction`)."""
    if prediction is None:
        return None
    p_alive: float | None = prediction["p_alive"]
    return p_alive


def _document(
    state: CustomerState,
    as_of: datetime,
    population: Population,
    settings: ScoringSettings,
    *,
    encoded: bool = False,
) -> tuple[dict[str, Any], lifecycle.StageInfo, list[Transition], membership.Standing, Ledger]:
    """The card as a :class:`Card`-shaped dict of plain values, its stage, the transitions,
    the membership standing and the ledger it was read from.

    ``encoded``: for :func:`score`, which writes the dict straight to JSON: the sections an
    event seldom changes (the profile with the tags, an empty complaints or visits section,
    the preferences) come as JSON already written (``orjson.Fragment``, the same bytes), kept
    on the state and the ledger until what they say changes, and money as its text."""
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware")
    now = to_micros(as_of)
    today = lifecycle.day_of(as_of).toordinal()
    ledger = _ledger(state, now)
    median_gap = population.median_gap(settings)

    value = _value(ledger, now, encoded)
    # Value survives silence: the composite is judged over the window that ends at the last
    # purchase, so a key customer who goes quiet stays key (and reachable by a win-back).
    window_spend, window_orders = ledger.before_last(settings.tier_window_days)
    value_score = tiers.composite(
        window_spend,
        window_orders,
        value["purchase_interval_days"] or median_gap,
        ledger.outstanding,
        settings,
    )
    prediction = _prediction(ledger, today, population)
    state.walk = lifecycle.walk(ledger.days, median_gap, settings, state.walk)
    stage, history = state.walk.at(today)
    updated = state.latest_event_at(now)

    # A customer without a purchase has no value to rank and no potential to weigh.
    tier: Tier | None = None
    strategy: Strategy | None = None
    if population.tiers is not None and ledger.orders:
        tier = tiers.tier(value_score, population.tiers)
        if prediction is not None and prediction["clv_365d"] is not None:
            strategy = tiers.strategy(
                value_score,
                prediction["clv_365d"],
                prediction["p_alive"],
                population.tiers,
                settings,
            )

    member_tiers = settings.membership_tiers
    member = membership.standing(
        state, ledger.window, now, member_tiers, ledger.tier_walk(member_tiers)
    )
    rfm_doc = _rfm(ledger, today, population.rfm, stage.stage)
    profile: Any
    tags: Any
    set_by_rules: Any
    visits: Any
    complaint_section: Any
    preferences: Any
    if encoded:
        head = _head(state, member.tier)
        profile, tags, set_by_rules = head.profile, head.tags, head.rule_tags
        visits = _NO_VISITS if state.no_visits() else _visits(state, now)
        complaint_section = (
            _NO_COMPLAINTS
            if not state.complaints
            else complaints.card_section(state, now, tier, settings)
        )
        preferences = ledger.preferences_json()
    else:
        profile = _profile(state)
        if member.tier != profile["member_tier"]:
            # The computed tier stands in the profile's field; the cached section stays as
            # the client wrote it.
            profile = {**profile, "member_tier": member.tier}
        own_tags: list[str] = profile["tags"]
        set_by_rules = rule_tags(state)
        tags = all_tags(own_tags, set_by_rules)
        visits = _visits(state, now)
        complaint_section = complaints.card_section(state, now, tier, settings)
        preferences = ledger.preferences()
    doc = {
        "customer_id": state.customer_id,
        "as_of": as_of,
        "profile": profile,
        "tags": tags,
        "rule_tags": set_by_rules,
        "value": value,
        "value_score": value_score,
        "rfm": rfm_doc,
        "prediction": prediction,
        "tier": tier,
        "strategy": strategy,
        "stage": stage.stage,
        "stage_since": lifecycle.midnight(stage.since) if stage.since else None,
        "previous_stage": history[-1].from_stage if history else None,
        "next_transition_at": stage.next_transition_at,
        "complaints": complaint_section,
        "visits": visits,
        "updated_at": _moment(updated),
        "preferences": preferences,
        "membership": member.section,
    }
    return doc, stage, history, member, ledger


def _visits(state: CustomerState, now: int) -> dict[str, Any]:
    last_30d, visits, visited = state.visit_counts(now, 30 * DAY_US)
    return {"last_30d": last_30d, "total": visits, "last_at": _moment(visited)}


def _encoded(value: object) -> orjson.Fragment:
    """``value`` as the card's JSON writes it, to embed as it is."""
    return kept_json(orjson.dumps(value, default=money_json, option=orjson.OPT_UTC_Z))


# What the card says of a customer who never visited or complained, written once.
_NO_VISITS = _encoded({"last_30d": 0, "total": 0, "last_at": None})
_NO_COMPLAINTS = _encoded(complaints.empty_section())


@dataclass(frozen=True, slots=True)
class Head:
    """The card's profile, tags and rule tags as JSON, with the figures the customers table
    keeps from them; written again only when the profile (``profile_card``, rebuilt on every
    winning profile write) or the membership tier standing in it changes."""

    profile_card: dict[str, Any]
    member_tier: str | None
    profile: orjson.Fragment
    tags: orjson.Fragment
    rule_tags: orjson.Fragment
    name: str | None
    email: str | None
    search: str | None


def _head(state: CustomerState, member_tier: str | None) -> Head:
    card = _profile(state)
    head = state.card_head
    if isinstance(head, Head) and head.profile_card is card and head.member_tier == member_tier:
        return head
    profile = card
    if member_tier != card["member_tier"]:
        # The computed tier stands in the profile's field; the cached section stays as the
        # client wrote it.
        profile = {**card, "member_tier": member_tier}
    set_by_rules = rule_tags(state)
    search = " ".join(x for x in (profile["name"], profile["email"], profile["phone"]) if x)
    head = Head(
        card,
        member_tier,
        _encoded(profile),
        _encoded(all_tags(profile["tags"], set_by_rules)),
        _encoded(set_by_rules),
        profile["name"],
        profile["email"],
        search.lower()[:600] or None,
    )
    state.card_head = head
    return head


def purchase_days(state: CustomerState, as_of: datetime) -> list[date]:
    """The distinct UTC days on which ``state``'s live orders were bought, up to ``as_of``."""
    return sorted({_day(p.at) for p in state.purchases(to_micros(as_of))})


def _day(us: int) -> date:
    return _EPOCH_DAY + timedelta(days=us // DAY_US)


def _moment(us: int | None) -> datetime | None:
    return None if us is None else from_micros(us)


def _ledger(state: CustomerState, now: int) -> Ledger:
    """The ledger of ``state``'s purchases at ``now``: the one the state carries when it
    holds then, else built afresh (and kept by the state when it holds from now on)."""
    ledger = state.ledger
    if isinstance(ledger, Ledger) and ledger.horizon is not None and ledger.horizon <= now:
        return ledger
    ledger = Ledger.of(state, now)
    if ledger.horizon is not None:
        state.ledger = ledger
    return ledger


def _value(ledger: Ledger, now: int, encoded: bool) -> dict[str, Any]:
    """The value section; ``encoded``: with its money as text (what ``orjson`` would call
    :func:`money_json` for), else as ``Decimal``."""
    lifetime = ledger.lifetime
    orders = ledger.orders
    ats = ledger.ats
    average = _average(lifetime, orders)
    spend_30d, spend_90d, spend_365d = (
        ledger.since(now, 30)[0],
        ledger.since(now, 90)[0],
        ledger.since(now, 365)[0],
    )
    outstanding = ledger.outstanding
    money: Any = lifetime, spend_30d, spend_90d, spend_365d, average, outstanding
    if encoded:
        money = [None if m is None else money_text_of(m) for m in money]
    return {
        "lifetime_spend": money[0],
        "spend_30d": money[1],
        "spend_90d": money[2],
        "spend_365d": money[3],
        "orders": orders,
        "average_order_value": money[4],
        "first_order_at": from_micros(ats[0]) if ats else None,
        "last_order_at": from_micros(ats[-1]) if ats else None,
        "purchase_interval_days": lifecycle.median(ledger.gaps) if ledger.gaps else None,
        "outstanding": money[5],
    }


# Money's places, 0 to 4, as quantize exponents.
_PLACES = tuple(Decimal(1).scaleb(-places) for places in range(5))


def _average(total: Decimal, count: int) -> Decimal | None:
    if not count:
        return None
    # As many decimal places as the amounts carry ("70.00", not "70.0000"), at most Money's 4.
    exponent = total.as_tuple().exponent
    places = min(max(-exponent, 0), 4) if isinstance(exponent, int) else 4
    return (total / count).quantize(_PLACES[places], rounding=ROUND_HALF_EVEN)


def _rfm(
    ledger: Ledger, today: int, bp: RfmBreakpoints | None, stage: Stage
) -> dict[str, Any] | None:
    days = ledger.days
    if bp is None or not days:
        return None
    recency = today - days[-1]
    scored = rfm.score(recency, ledger.orders, float(ledger.lifetime), bp)
    (r, f, m), segment = rfm.judged(scored, stage)
    return {"recency": r, "frequency": f, "monetary": m, "segment": segment}


def _prediction(ledger: Ledger, today: int, pop: Population) -> dict[str, Any] | None:
    stats = ledger.stats(today)
    if stats is None:
        return None
    x, t_x, age = stats.x, stats.t_x, stats.T
    if pop.bg is None:
        # The customer's own statistics are known; the model figures wait for a fit.
        return {
            "frequency": x,
            "recency_days": t_x,
            "age_days": age,
            "p_alive": None,
            "expected_orders_90d": None,
            "expected_order_value": None,
            "clv_365d": None,
            "p_order": None,
        }
    order_value: float | None = None
    clv: float | None = None
    if pop.gg is not None:
        order_value = _finite(predict.expected_order_value(pop.gg, x, stats.mean_spend))
        clv = _finite(predict.clv(pop.bg, pop.gg, x, t_x, age, stats.mean_spend, 365.0))
    return {
        "frequency": x,
        "recency_days": t_x,
        "age_days": age,
        # BG/NBD learns that a customer has left from the gaps between their repeat
        # purchases: one who bought on a single day is alive by the model's construction
        # (1, years later as well), which no one should read as a judgment. Not judged until
        # a second purchase day; the chance of an order (``p_order``) is the model's word on
        # them, and it falls as their silence lengthens.
        "p_alive": predict.p_alive(pop.bg, x, t_x, age) if x else None,
        "expected_orders_90d": predict.expected_orders(pop.bg, 90.0, x, t_x, age),
        "expected_order_value": order_value,
        "clv_365d": clv,
        "p_order": {
            str(days): predict.p_order(pop.bg, float(days), x, t_x, age) for days in P_ORDER_DAYS
        },
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def all_tags(own: list[str], set_by_rules: list[str]) -> list[str]:
    """The customer's tags as the card shows them: the backend's own, in its order, then
    those rules set that the backend did not."""
    return [*own, *(t for t in set_by_rules if t not in own)]


def _profile(state: CustomerState) -> dict[str, Any]:
    if state.profile_card is None:
        # A customer known only by what they did (no profile write yet) has the model's
        # empty profile, validated once and shared: the cached section is never changed in
        # place (the card spreads it into a new dict to set its member tier).
        state.profile_card = _build_profile(state) if state.profile else _empty_profile()
    return state.profile_card


@functools.cache
def _empty_profile() -> dict[str, Any]:
    return Profile(consent=Consent()).model_dump()


def _build_profile(state: CustomerState) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    consent: dict[str, Any] = {}
    for name, value in state.profile_values():
        if name.startswith(RULE_TAG):
            continue  # the card's rule_tags, not the profile clients wrote
        if name == UNSUBSCRIBED:
            entry = state.profile[name]
            if isinstance(value, dict):
                consent["unsubscribed"] = Unsubscribed(at=from_micros(entry.at), how=value["how"])
                # Their own word outranks any client's: no marketing until it is lifted.
                consent["marketing"] = False
        elif name.startswith("consent."):
            consent.setdefault(name.removeprefix("consent."), bool(value))
        elif value is None and name in ("tags", "attributes"):
            continue  # cleared: the model's empty default
        else:
            fields[name] = value
    # Validated: the profile holds what clients sent.
    return Profile(consent=Consent(**consent), **fields).model_dump()
