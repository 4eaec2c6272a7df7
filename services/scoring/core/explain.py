"""A score card explained in words: which facts put the customer in their stage, tier,
segment and strategy.

:func:`explain` is a pure function of the same inputs as the card (a customer's facts, a
moment, the population, the settings). It builds the card, then reads the rules of
:mod:`~services.scoring.core.lifecycle`, :mod:`~services.scoring.core.tiers` and
:mod:`~services.scoring.core.rfm` back against the customer's figures: every verdict is the
card's own (never recomputed differently), and each reason carries a stable ``code``, the
``facts`` it rests on and a ``text`` a person reads.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

from pydantic import BaseModel, Field

from services.scoring.core import lifecycle
from services.scoring.core.card import Population, build_card, purchase_days
from services.scoring.core.rfm import QUIET_RECENCY_MAX, RfmBreakpoints
from services.scoring.core.state import DAY_US, CustomerState, to_micros
from services.scoring.settings import ScoringSettings
from shared.card import Card, Stage, money_text

Fact = str | int | float | bool | None


class Reason(BaseModel):
    """One reason: what it is (``code``), the figures it rests on, and the sentence."""

    code: str = Field(description="stable, e.g. `stage.rhythm`, `tier.key_cut`")
    facts: dict[str, Fact] = Field(description="the figures the sentence states (money as text)")
    text: str


class Verdict(BaseModel):
    value: str | None = Field(description="as on the card; null when the card has none")
    reasons: list[Reason] = Field(description="the main reason first")


class Explanation(BaseModel):
    customer_id: str
    as_of: datetime
    stage: Verdict
    tier: Verdict
    segment: Verdict
    strategy: Verdict


def explain(
    state: CustomerState, as_of: datetime, population: Population, settings: ScoringSettings
) -> Explanation:
    """Why ``state``'s card at ``as_of`` says what it says (see the module docstring)."""
    card = build_card(state, as_of, population, settings)
    days = purchase_days(state, as_of)
    return Explanation(
        customer_id=card.customer_id,
        as_of=as_of,
        stage=Verdict(value=card.stage, reasons=_stage(card, days, population, settings)),
        tier=Verdict(value=card.tier, reasons=_tier(card, state, population, settings)),
        segment=Verdict(
            value=card.rfm.segment if card.rfm else None,
            reasons=_segment(card, days, population.rfm),
        ),
        strategy=Verdict(value=card.strategy, reasons=_strategy(card, population, settings)),
    )


def _n(x: float) -> str:
    """A figure as people write it: 30, 30.5, 7.42."""
    return f"{x:.2f}".rstrip("0").rstrip(".") if not float(x).is_integer() else f"{int(x)}"


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"


# -- stage ------------------------------------------------------------------------------------


def _stage(
    card: Card, days: list[date], population: Population, settings: ScoringSettings
) -> list[Reason]:
    s = settings
    if not days:
        return [
            Reason(
                code="stage.no_purchase",
                facts={"purchase_days": 0},
                text="no purchase yet → prospect",
            )
        ]
    count = len(days)
    gaps = sorted((b - a).days for a, b in pairwise(days))
    own = count >= s.own_rhythm_min_purchases
    rhythm = lifecycle.median(gaps) if own else population.median_gap(s)
    whose = "their own" if own else "the population's"
    today = lifecycle.day_of(card.as_of)
    last = days[-1]
    silent = (today - last).days
    limits = lifecycle.thresholds(rhythm, count == 1, s)
    churn = limits.churned_on
    decline = limits.declining_on
    facts: dict[str, Fact] = {
        "purchase_days": count,
        "last_purchase_day": last.isoformat(),
        "silent_days": silent,
        "rhythm_days": rhythm,
        "rhythm_source": "own" if own else "population",
        "declining_after_days": None if decline is None else decline - 1,
        "churned_after_days": churn - 1,
    }
    rhythm_text = f"{whose} {_n(rhythm)}-day rhythm"
    # Which rule set each threshold, so the sentence names the one that did.
    decline_basis = f"{_n(s.decline_rhythm_multiple)}× {rhythm_text}"
    if s.decline_rhythm_multiple * rhythm < s.decline_min_days:
        decline_basis = (
            f"never before {s.decline_min_days}: {decline_basis} is shorter than a lapse"
        )
    churn_basis = (
        f"{_n(s.churn_rhythm_multiple)}× {rhythm_text}, at least {s.churn_min_days} and at most "
        f"{s.churn_max_days}"
    )
    plain_churn = math.floor(
        min(max(s.churn_rhythm_multiple * rhythm, s.churn_min_days), s.churn_max_days)
    )
    if decline is not None and churn - 1 > max(plain_churn, s.new_days - 1 if count == 1 else 0):
        churn_basis += f", and {s.churn_after_decline_min_days} after declining began"
    bought = f"{count} purchase day{'s' if count > 1 else ''}; last purchase {_days(silent)} ago"
    stage = card.stage
    reasons: list[Reason] = []
    if stage is Stage.REACTIVATED:
        until = (card.stage_since or card.as_of) + timedelta(days=s.reactivated_days)
        facts |= {
            "previous_stage": card.previous_stage,
            "reactivated_until": until.date().isoformat(),
        }
        reasons.append(
            Reason(
                code="stage.reactivated",
                facts=facts,
                text=f"bought again on {last.isoformat()} after churning → reactivated for "
                f"{_days(s.reactivated_days)}, until {until.date().isoformat()}",
            )
        )
    elif stage is Stage.DECLINING and decline is not None:
        bound = f"more than {_days(decline - 1)} ({decline_basis})"
        reasons.append(
            Reason(code="stage.silent", facts=facts, text=f"{bought}: silent {bound} → {stage}")
        )
        reasons.append(
            Reason(
                code="stage.next",
                facts={"churned_after_days": churn - 1},
                text=f"churned once silent more than {_days(churn - 1)}",
            )
        )
    elif stage is Stage.CHURNED:
        bound = f"more than {_days(churn - 1)} ({churn_basis})"
        reasons.append(
            Reason(code="stage.silent", facts=facts, text=f"{bought}: silent {bound} → {stage}")
        )
    else:
        if decline is not None:
            before = f"within the {_days(decline - 1)} ({decline_basis}) before declining"
        else:
            before = (
                f"within the {_days(churn - 1)} before churned ({rhythm_text} is so long that "
                "a declining spell would not fit under the cap)"
            )
        reasons.append(
            Reason(code="stage.rhythm", facts=facts, text=f"{bought}, {before} → {stage}")
        )
        if stage is Stage.NEW:
            reasons.append(
                Reason(
                    code="stage.first_purchase",
                    facts={"new_days": s.new_days},
                    text=f"one purchase day: new for at least {_days(s.new_days)}, until they "
                    "buy again or fall silent",
                )
            )
        elif count >= 2:
            gap = (days[-1] - days[-2]).days
            on_rhythm = lifecycle.on_rhythm(gap, rhythm, s)
            mature_facts: dict[str, Fact] = {
                "purchase_days": count,
                "mature_min_purchases": s.mature_min_purchases,
                "last_gap_days": gap,
                "mature_gap_multiple": s.mature_gap_multiple,
            }
            if stage is Stage.MATURE:
                within = f"within {_n(s.mature_gap_multiple)}× the rhythm"
                if gap > s.mature_gap_multiple * rhythm:
                    within = f"too short to be declining (at most {s.decline_min_days})"
                text = (
                    f"{count} purchase days (at least {s.mature_min_purchases}) and the last gap "
                    f"of {_days(gap)} {within} → mature"
                )
            elif count < s.mature_min_purchases:
                text = (
                    f"mature from {s.mature_min_purchases} purchase days on rhythm; {count} so far"
                )
            elif not on_rhythm:
                longer = f"{_n(s.mature_gap_multiple)}× the rhythm"
                if s.mature_gap_multiple * rhythm < s.decline_min_days:
                    longer = f"{_days(s.decline_min_days)}"
                text = f"the last gap of {_days(gap)} is longer than {longer}: not yet mature"
            else:
                text = "a repeat buyer, not yet judged mature at a purchase on rhythm"
            reasons.append(Reason(code="stage.mature", facts=mature_facts, text=text))
    return reasons


# -- tier -------------------------------------------------------------------------------------


def _tier(
    card: Card, state: CustomerState, population: Population, settings: ScoringSettings
) -> list[Reason]:
    s = settings
    value = card.value
    if not value.orders:
        return [
            Reason(
                code="tier.no_purchase", facts={"orders": 0}, text="no purchase: no value to rank"
            )
        ]
    composite = _composite_facts(state, card, population, settings)
    parts = Reason(
        code="tier.value_score",
        facts=composite,
        text=f"value score {_n(round(card.value_score, 2))}: {composite['window_orders']} "
        f"order(s) worth {composite['window_spend']} in the {s.tier_window_days} days up to "
        f"the last purchase, a {_n(float(composite['rhythm_days'] or 0))}-day rhythm and "
        f"{money_text(value.outstanding)} outstanding",
    )
    cuts = population.tiers
    if cuts is None:
        return [
            Reason(
                code="tier.unfitted", facts={}, text="no tiers until the population is first fitted"
            ),
            parts,
        ]
    facts: dict[str, Fact] = {
        "value_score": card.value_score,
        "key_cut": cuts.key_cut,
        "low_cut": cuts.low_cut,
        "key_share": s.tier_key_share,
        "low_share": s.tier_low_share,
    }
    score = _n(round(card.value_score, 2))
    top = f"top {_n(s.tier_key_share * 100)}%"
    bottom = f"bottom {_n(s.tier_low_share * 100)}%"
    if card.tier == "key":
        key_cut = _n(round(cuts.key_cut, 2))
        text = f"value score {score} is at or above the key cut {key_cut} ({top}) → key"
    elif card.tier == "low":
        low_cut = _n(round(cuts.low_cut, 2))
        text = f"value score {score} is at or below the low cut {low_cut} ({bottom}) → low"
    else:
        text = (
            f"value score {score} lies between the low cut {_n(round(cuts.low_cut, 2))} ({bottom}) "
            f"and the key cut {_n(round(cuts.key_cut, 2))} ({top}) → regular"
        )
    return [Reason(code=f"tier.{card.tier}", facts=facts, text=text), parts]


def _composite_facts(
    state: CustomerState, card: Card, population: Population, settings: ScoringSettings
) -> dict[str, Fact]:
    """The composite's inputs, as :func:`~services.scoring.core.card.build_card` took them."""
    purchases = state.purchases(to_micros(card.as_of))
    last = purchases[-1].at
    since = last - settings.tier_window_days * DAY_US
    window = [p for p in purchases if p.at > since]
    rhythm = card.value.purchase_interval_days or population.median_gap(settings)
    return {
        "window_days": settings.tier_window_days,
        "window_orders": len(window),
        "window_spend": money_text(sum((p.net for p in window), Decimal(0))),
        "rhythm_days": rhythm,
        "outstanding": money_text(card.value.outstanding),
    }


# -- segment ----------------------------------------------------------------------------------


def _segment(card: Card, days: list[date], cuts: RfmBreakpoints | None) -> list[Reason]:
    if not days:
        return [Reason(code="segment.no_purchase", facts={}, text="no purchase: no RFM segment")]
    if card.rfm is None or cuts is None:
        return [
            Reason(
                code="segment.unfitted",
                facts={},
                text="no RFM scores until the population is first fitted",
            )
        ]
    r, f, m = card.rfm.recency, card.rfm.frequency, card.rfm.monetary
    recency = (lifecycle.day_of(card.as_of) - days[-1]).days
    facts: dict[str, Fact] = {
        "recency_days": recency,
        "orders": card.value.orders,
        "lifetime_spend": money_text(card.value.lifetime_spend),
        "r": r,
        "f": f,
        "m": m,
        "recency_cuts": ",".join(_n(round(c, 2)) for c in cuts.recency_days),
        "frequency_cuts": ",".join(_n(round(c, 2)) for c in cuts.frequency),
        "monetary_cuts": ",".join(_n(round(c, 2)) for c in cuts.monetary),
    }
    scores = (
        f"R={r} (last purchase {_days(recency)} ago), F={f} ({card.value.orders} orders), "
        f"M={m} ({money_text(card.value.lifetime_spend)} spent), by the population's quintiles"
    )
    reasons = [Reason(code="segment.rfm", facts=facts, text=f"{scores} → {card.rfm.segment}")]
    if card.stage is Stage.NEW:
        reasons.append(
            Reason(
                code="segment.new",
                facts={"stage": card.stage},
                text="a customer in the stage new is in the segment new",
            )
        )
    elif card.stage in (Stage.DECLINING, Stage.CHURNED) and r == QUIET_RECENCY_MAX:
        reasons.append(
            Reason(
                code="segment.quiet",
                facts={"stage": card.stage, "recency_max": QUIET_RECENCY_MAX},
                text=f"while {card.stage}, recency scores at most {QUIET_RECENCY_MAX}",
            )
        )
    return reasons


# -- strategy ---------------------------------------------------------------------------------


def _strategy(card: Card, population: Population, settings: ScoringSettings) -> list[Reason]:
    cuts = population.tiers
    prediction = card.prediction
    if card.strategy is None or cuts is None or cuts.clv_median is None or prediction is None:
        why = (
            "no purchase: nothing to weigh"
            if not card.value.orders
            else "no strategy until the population (tiers and the CLV model) is fitted"
        )
        return [Reason(code="strategy.unknown", facts={}, text=why)]
    clv = prediction.clv_365d or 0.0
    p_alive = prediction.p_alive
    high_value = card.value_score >= cuts.composite_median
    alive = p_alive is None or p_alive >= settings.potential_min_p_alive
    high_potential = alive and clv >= cuts.clv_median
    facts: dict[str, Fact] = {
        "value_score": card.value_score,
        "value_median": cuts.composite_median,
        "clv_365d": clv,
        "clv_median": cuts.clv_median,
        "p_alive": p_alive,
        "min_p_alive": settings.potential_min_p_alive,
        "high_value": high_value,
        "high_potential": high_potential,
    }
    value = (
        f"value score {_n(round(card.value_score, 2))} "
        f"{'≥' if high_value else '<'} the median {_n(round(cuts.composite_median, 2))} "
        f"({'high' if high_value else 'low'} value)"
    )
    if not alive:
        potential = (
            f"P(alive) {_n(round(p_alive or 0, 3))} below {_n(settings.potential_min_p_alive)} "
            "(low potential, whatever the CLV)"
        )
    else:
        potential = (
            f"predicted 365-day value {_n(round(clv, 2))} {'≥' if high_potential else '<'} the "
            f"median {_n(round(cuts.clv_median, 2))} "
            f"({'high' if high_potential else 'low'} potential)"
        )
    return [
        Reason(
            code=f"strategy.{card.strategy}",
            facts=facts,
            text=f"{value}; {potential} → {card.strategy}",
        )
    ]
