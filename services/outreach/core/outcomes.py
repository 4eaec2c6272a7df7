"""The outcomes report: what each rule, strategy, kind, tier (or the whole program) achieved,
arm by arm, against its baseline. A pure function of the period's touches and what
attribution gave each (:mod:`services.outreach.core.attribution`), run group by group
(:func:`attribute_by_group`).

- **Each group is measured on its own touches.** Within a group the last touch wins, as
  attribution says; a touch of another group takes nothing from it. A rule's hold-outs are
  never sent its message, so they stay free for other rules' (a frequency cap the message
  would have used up, say): were the customer's last touch of any rule to win, those
  messages would take the hold-outs' orders, the control arm would convert less than it
  does, and a rule with no effect would show a lift. So an order after a win-back and a
  recall counts for each rule grouped by rule, and for the later one where both are in one
  group (one strategy, say).

- A customer counts **once per group and arm**: in it when touched in the period (decided
  in it), converted when any of their touches in the group's arm converted; their revenue is
  the sum of what those touches converted.
- Arms: ``treatment`` (sent) and ``control`` (the rule's hold-out, never sent). The global
  control group is compared only in ``by=program``: its customers (``control``) against the
  treated touches of the kinds it was held out of in the period (``treatment``); a rule's
  hold-outs are in neither arm there, and the global control group is in neither arm of
  the other groupings.
- Baseline: the control arm when it has customers (``control_group``); else the model's
  forecast for the treated customers who have one (``model_forecast``: the mean of each
  one's forecast, from their first touch in the group); else ``none`` (nothing to compare).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from services.outreach.core import lift
from services.outreach.core.attribution import (
    ZERO,
    Converted,
    Touch,
    attribute_reached,
    reachable_by_customer,
)
from services.outreach.core.goals import GoalEvent

By = Literal["rule", "strategy", "kind", "tier", "program"]
Baseline = Literal["control_group", "model_forecast", "none"]
Verdict = Literal["lift", "harm", "no_difference", "too_small", "no_baseline"]

PROGRAM = "program"
CENTS = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class Touched:
    """A touch decided in the period, with what it is grouped by."""

    touch: Touch
    arm: str
    rule_id: str
    kind: str
    tier: str | None
    strategy: str | None
    baseline: float | None


class ArmFigures(BaseModel):
    """One arm of one group."""

    customers: int = Field(description="customers touched in the period (each counted once)")
    conversions: int = Field(
        description="of those, the customers whose touch reached its goal (each counted once)"
    )
    conversion_rate: float | None = Field(description="conversions / customers (null: none)")
    revenue: Decimal = Field(description="what their conversions brought (orders net of refunds)")
    revenue_per_customer: Decimal | None = Field(description="revenue / customers (null: none)")


class Difference(BaseModel):
    """Treatment minus the baseline, with its 95% interval and how it was computed."""

    estimate: float
    low: float
    high: float
    method: str


class GroupOutcome(BaseModel):
    """What one group achieved (see the endpoint's description for every figure)."""

    key: str | None = Field(description="the rule id, strategy, kind or tier (null: not known)")
    treatment: ArmFigures
    control: ArmFigures
    baseline: Baseline = Field(
        description="`control_group`: against the control arm; `model_forecast`: against "
        "what the model predicted the treated customers would do anyway; `none`: no baseline"
    )
    forecast_rate: float | None = Field(
        None, description="with `model_forecast`: the treated customers' mean forecast"
    )
    forecast_customers: int = Field(
        0, description="with `model_forecast`: the treated customers who had a forecast"
    )
    conversion_difference: Difference | None = Field(
        None, description="conversion rate, treatment minus baseline (percentage points / 100)"
    )
    revenue_difference: Difference | None = Field(
        None, description="revenue per customer, treatment minus control (control group only)"
    )
    small_sample: bool = Field(
        description=f"an arm has fewer than {lift.MIN_CUSTOMERS} customers or fewer than "
        f"{lift.MIN_CONVERSIONS} conversions: never a win"
    )
    verdict: Verdict


@dataclass(slots=True)
class _Customer:
    converted: bool = False
    revenue: Decimal = ZERO
    baseline: float | None = None


def _key(t: Touched, by: By) -> str | None:
    if by == "rule":
        return t.rule_id
    if by == "kind":
        return t.kind
    if by == "tier":
        return t.tier
    if by == "strategy":
        return t.strategy
    return PROGRAM


def _arm(t: Touched, by: By, held_out_kinds: frozenset[str]) -> str | None:
    if by == "program":
        if t.arm == "global_control":
            return "control"
        return "treatment" if t.arm == "treatment" and t.kind in held_out_kinds else None
    return t.arm if t.arm in ("treatment", "control") else None


@dataclass(frozen=True, slots=True)
class _Groups:
    """Where ``by`` measures each touch: in which group and arm, or nowhere. The period's
    touches decide it: the kinds the global control group was held out of, and per group the
    rules that held customers out in it."""

    by: By
    held_out_kinds: frozenset[str]
    # Against a control arm, the treated are the touches of the rules that held customers out
    # in the group: a strategy's hold-outs come from its playbook, and comparing them with
    # every other rule's messages to those customers would credit the playbook with them.
    controlled: Mapping[str | None, frozenset[str]]

    @classmethod
    def of(cls, period: Sequence[Touched], by: By) -> _Groups:
        held_out_kinds = frozenset(t.kind for t in period if t.arm == "global_control")
        controlled: dict[str | None, set[str]] = {}
        if by not in ("rule", "program"):
            for t in period:
                if t.arm == "control":
                    controlled.setdefault(_key(t, by), set()).add(t.rule_id)
        return cls(by, held_out_kinds, {k: frozenset(v) for k, v in controlled.items()})

    def place(self, t: Touched) -> tuple[str | None, str] | None:
        """The touch's group and arm, or None when this grouping leaves it out."""
        arm = _arm(t, self.by, self.held_out_kinds)
        if arm is None:
            return None
        key = _key(t, self.by)
        rules = self.controlled.get(key)
        if arm == "treatment" and rules and t.rule_id not in rules:
            return None
        return key, arm


def attribute_by_group(
    touched: Sequence[Touched],
    period: Sequence[Touched],
    events: Mapping[str, Sequence[GoalEvent]],
    by: By,
) -> dict[str, Converted]:
    """What each touch converted, attribution run within each group of ``by`` over the
    touches it measures there (see the module docstring): ``touched`` are every touch of the
    period's customers, ``period`` the period's own (which decide the groups)."""
    groups = _Groups.of(period, by)
    measured: dict[str | None, list[Touch]] = {}
    for t in touched:
        placed = groups.place(t)
        if placed is not None:
            measured.setdefault(placed[0], []).append(t.touch)
    reachable = reachable_by_customer(events)
    out: dict[str, Converted] = {}
    for touches in measured.values():
        out.update(attribute_reached(touches, reachable))
    return out


def report(
    touched: Sequence[Touched], converted: Mapping[str, Converted], by: By
) -> list[GroupOutcome]:
    """The outcome of every group with a touch in the period, in key order: ``touched`` are
    the period's touches, ``converted`` what each converted (:func:`attribute_by_group`)."""
    place = _Groups.of(touched, by).place
    groups: dict[str | None, dict[str, dict[str, _Customer]]] = {}
    for t in sorted(touched, key=lambda t: (t.touch.at, t.touch.id)):
        placed = place(t)
        if placed is None:
            continue
        key, arm = placed
        arms = groups.setdefault(key, {"treatment": {}, "control": {}})
        customer = arms[arm].setdefault(t.touch.customer_id, _Customer())
        got = converted.get(t.touch.id)
        if got is not None and got.conversions:
            customer.converted = True
            customer.revenue += got.revenue
        if customer.baseline is None:
            customer.baseline = t.baseline
    return [
        _outcome(key, arms["treatment"], arms["control"])
        for key, arms in sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    ]


def _figures(customers: Mapping[str, _Customer]) -> ArmFigures:
    n = len(customers)
    x = sum(1 for c in customers.values() if c.converted)
    revenue = sum((c.revenue for c in customers.values()), ZERO)
    return ArmFigures(
        customers=n,
        conversions=x,
        conversion_rate=x / n if n else None,
        revenue=revenue,
        revenue_per_customer=(revenue / n).quantize(CENTS) if n else None,
    )


def _difference(interval: lift.Interval) -> Difference:
    return Difference(
        estimate=interval.estimate, low=interval.low, high=interval.high, method=interval.method
    )


def _outcome(
    key: str | None, treated: Mapping[str, _Customer], control: Mapping[str, _Customer]
) -> GroupOutcome:
    t, c = _figures(treated), _figures(control)
    if c.customers:
        rates = lift.rate_difference(t.conversions, t.customers, c.conversions, c.customers)
        revenue = lift.revenue_difference(
            t.customers,
            [float(x.revenue) for x in treated.values() if x.revenue],
            c.customers,
            [float(x.revenue) for x in control.values() if x.revenue],
        )
        small = lift.small_sample((t.customers, t.conversions), (c.customers, c.conversions))
        return GroupOutcome(
            key=key,
            treatment=t,
            control=c,
            baseline="control_group",
            conversion_difference=_difference(rates),
            revenue_difference=_difference(revenue),
            small_sample=small,
            verdict=lift.verdict(rates, small),
        )
    forecast = [x for x in treated.values() if x.baseline is not None]
    if not forecast:
        return GroupOutcome(
            key=key,
            treatment=t,
            control=c,
            baseline="none",
            small_sample=lift.small_sample((t.customers, t.conversions)),
            verdict="no_baseline",
        )
    n = len(forecast)
    x = sum(1 for f in forecast if f.converted)
    mean = math.fsum(f.baseline or 0.0 for f in forecast) / n
    rates = lift.forecast_difference(x, n, mean)
    small = lift.small_sample((n, x))
    return GroupOutcome(
        key=key,
        treatment=t,
        control=c,
        baseline="model_forecast",
        forecast_rate=mean,
        forecast_customers=n,
        conversion_difference=_difference(rates),
        small_sample=small,
        verdict=lift.verdict(rates, small),
    )


# -- what the reduce-cost policy saved, and the mix of contacts ------------------------------

# Service contacts: the ones that bring value or care rather than a sale (the essays' "real
# value and care"); alerts to the team are no contact at all.
SERVICE_KINDS = frozenset({"greeting", "follow_up", "care"})


class ReduceCost(BaseModel):
    """What the reduce-cost policy saved in the period, against what those customers still
    brought."""

    contacts_saved: int = Field(
        description="actions suppressed with reason `reduce_cost`: messages not sent"
    )
    cost_saved: Decimal = Field(
        description="those contacts times the policy's `contact_cost` of their channel"
    )
    customers: int = Field(description="the customers those contacts were for")
    revenue: Decimal = Field(
        description="what those customers still ordered in the period (net of refunds, "
        "cancelled orders left out)"
    )
    by_channel: dict[str, int] = Field(description="contacts saved per channel")


class TierMix(BaseModel):
    """The messages sent to a tier's customers in the period, by purpose."""

    tier: str | None = Field(description="the customer's tier when decided (null: none yet)")
    promotional: int = Field(description="sent of the policy's promotional kinds")
    service: int = Field(description="sent greetings, follow-ups and customer-facing care")
    other: int = Field(description="every other kind sent (apologies, say)")
    service_share: float | None = Field(
        description="service / (service + promotional); null when neither was sent"
    )


def contact_mix(
    sent: Sequence[tuple[str | None, str, int]], promotional_kinds: frozenset[str]
) -> list[TierMix]:
    """``sent`` as (tier, kind, count) → the mix per tier."""
    tiers: dict[str | None, dict[str, int]] = {}
    for tier, kind, count in sent:
        mix = tiers.setdefault(tier, {"promotional": 0, "service": 0, "other": 0})
        if kind in SERVICE_KINDS:
            mix["service"] += count
        elif kind in promotional_kinds:
            mix["promotional"] += count
        else:
            mix["other"] += count
    out = []
    for tier, mix in sorted(tiers.items(), key=lambda kv: (kv[0] is None, kv[0] or "")):
        both = mix["service"] + mix["promotional"]
        out.append(TierMix(tier=tier, **mix, service_share=mix["service"] / both if both else None))
    return out


class OutcomesReport(BaseModel):
    """`GET /v1/outcomes`: see the endpoint's description."""

    by: By
    since: datetime
    until: datetime
    touches: int = Field(description="the touches decided in the period that were attributed")
    groups: list[GroupOutcome]
    reduce_cost: ReduceCost | None = Field(
        None, description="present when the policy sets a `contact_cost`"
    )
    contact_mix: list[TierMix]
