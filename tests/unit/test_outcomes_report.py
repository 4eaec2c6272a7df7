"""The outcomes report: a customer counts once per group and arm, the baseline is the control
arm, else the model's forecast, the global control group is compared only as a whole, and each
group is measured on its own touches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.outreach.core.attribution import Converted, Touch, attribute
from services.outreach.core.goals import Goal, GoalEvent
from services.outreach.core.lift import forecast_difference
from services.outreach.core.outcomes import Touched, attribute_by_group, contact_mix, report

T0 = datetime(2026, 6, 1, tzinfo=UTC)
GOAL = Goal(within_days=30)


def touched(
    tid: str, cid: str, arm: str, *, rule: str = "r", kind: str = "recall", base: float = 0.1
) -> Touched:
    return Touched(
        Touch(tid, cid, T0 + timedelta(hours=len(tid)), GOAL),
        arm,
        rule,
        kind,
        "key",
        "develop",
        base,
    )


def won(revenue: str) -> Converted:
    return Converted(conversions=1, revenue=Decimal(revenue), event_ids=["e"])


def test_a_customer_touched_twice_counts_once_and_converts_once() -> None:
    rows = [
        touched("a1", "a", "treatment"),
        touched("a22", "a", "treatment"),
        touched("b1", "b", "control"),
    ]
    [group] = report(rows, {"a1": won("10"), "a22": won("5")}, "rule")
    assert (group.treatment.customers, group.treatment.conversions) == (1, 1)
    assert group.treatment.revenue == Decimal("15")
    assert (group.control.customers, group.control.conversions) == (1, 0)
    assert group.baseline == "control_group" and group.verdict == "too_small"


def test_without_a_control_arm_the_baseline_is_the_model_forecast() -> None:
    rows = [touched(f"t{i}", f"c{i}", "treatment", base=0.2) for i in range(100)]
    converted = {f"t{i}": won("20") for i in range(40)}
    [group] = report(rows, converted, "kind")
    assert group.forecast_rate is not None
    expected = forecast_difference(40, 100, group.forecast_rate)
    assert group.baseline == "model_forecast"
    assert round(group.forecast_rate, 9) == 0.2 and group.forecast_customers == 100
    assert group.conversion_difference is not None
    assert group.conversion_difference.low == expected.low
    assert group.revenue_difference is None
    assert group.verdict == "lift"


def test_against_a_control_arm_only_the_rules_that_held_out_are_the_treated() -> None:
    rows = [
        touched("p1", "a", "treatment", rule="playbook"),
        touched("p22", "b", "control", rule="playbook"),
        # Another rule's message to the same strategy's customers, without a hold-out: it is
        # not the playbook's doing, and stays out of the comparison.
        touched("o1", "c", "treatment", rule="other"),
    ]
    [group] = report(rows, {"o1": won("30")}, "strategy")
    assert group.key == "develop" and group.baseline == "control_group"
    assert (group.treatment.customers, group.treatment.conversions) == (1, 0)
    assert (group.control.customers, group.control.conversions) == (1, 0)
    # With no hold-out in the group at all, every treated touch is judged by the forecast.
    [alone] = report([rows[2]], {"o1": won("30")}, "strategy")
    assert alone.baseline == "model_forecast" and alone.treatment.conversions == 1


def test_the_program_compares_the_global_control_group_with_the_kinds_it_missed() -> None:
    rows = [
        touched("g1", "g", "global_control", kind="recall"),
        touched("t1", "t", "treatment", kind="recall"),
        touched("s1", "s", "treatment", kind="apology"),  # never held from anyone
        touched("h1", "h", "control", kind="recall"),  # a rule's hold-out: neither arm
    ]
    [group] = report(rows, {}, "program")
    assert (group.treatment.customers, group.control.customers) == (1, 1)
    by_rule = report(rows, {}, "rule")
    assert [(g.treatment.customers, g.control.customers) for g in by_rule] == [(2, 1)]


def test_a_hold_out_s_order_counts_for_the_rule_that_held_them_out_whatever_came_after() -> None:
    # A recall with no effect at all: 100 customers sent it, 100 held out, 30 of each order
    # two days later. The recall's message used up a weekly frequency cap, so a win-back went
    # the next day only to the held-out customers, who were free for it.
    def at(days: int) -> datetime:
        return T0 + timedelta(days=days)

    rows: list[Touched] = []
    events: dict[str, list[GoalEvent]] = {}
    for n in range(200):
        cid, arm = f"c{n}", "treatment" if n < 100 else "control"
        rows.append(
            Touched(
                Touch(f"r{n}", cid, at(0), GOAL), arm, "recall", "recall", "key", "develop", 0.3
            )
        )
        if arm == "control":
            rows.append(
                Touched(
                    Touch(f"w{n}", cid, at(1), GOAL),
                    "treatment",
                    "winback",
                    "winback",
                    "key",
                    "develop",
                    0.3,
                )
            )
        if n % 100 < 30:
            data = {"order_id": f"o{n}", "status": "placed", "amount": "20.00"}
            events[cid] = [GoalEvent(f"o{n}", cid, "order.placed", at(2), Decimal(20), data)]

    recall, winback = report(rows, attribute_by_group(rows, rows, events, "rule"), "rule")
    assert (recall.treatment.conversions, recall.control.conversions) == (30, 30)
    assert recall.conversion_difference is not None
    assert recall.conversion_difference.estimate == 0 and recall.verdict == "no_difference"
    # The win-back is measured on its own touches too: its 30 of 100 ordered after it.
    assert (winback.key, winback.treatment.conversions) == ("winback", 30)
    # Had the customer's last touch of any rule taken the order, the win-back would have
    # emptied the recall's control arm, and a recall that changes nothing would show a lift.
    [biased, _] = report(rows, attribute([r.touch for r in rows], events), "rule")
    assert (biased.treatment.conversions, biased.control.conversions) == (30, 0)
    assert biased.conversion_difference is not None
    assert biased.conversion_difference.low > 0.2  # "30 points more", all of it false


def test_the_contact_mix_sets_service_against_promotion_per_tier() -> None:
    mix = contact_mix(
        [("key", "greeting", 3), ("key", "recall", 1), ("low", "apology", 2)],
        frozenset({"recall", "winback", "announcement"}),
    )
    assert [(m.tier, m.service, m.promotional, m.other, m.service_share) for m in mix] == [
        ("key", 3, 1, 0, 0.75),
        ("low", 0, 0, 2, None),
    ]
