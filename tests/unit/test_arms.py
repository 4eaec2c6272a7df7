"""Arms of an experiment: which customers are held out, and how a held-out decision counts in
a contact history (for its rule's own limits only: nobody was contacted)."""

from __future__ import annotations

from datetime import timedelta

from services.outreach.core.arms import arm_of, in_global_control, in_rule_control
from services.outreach.core.policy import CONTROL, Candidate, Outcome, Reason, decide_all
from services.outreach.core.rules import Limits
from tests.unit.test_policy import NOON_PARIS, POLICY, Contact, cand, card, go, sent

GLOBAL_KINDS = POLICY.held_out_kinds
CUSTOMERS = [f"c{n}" for n in range(4000)]


def arm(customer: str, kind: str = "recall", *, rule: float = 0, glob: float = 0) -> str | None:
    return arm_of(
        "r",
        customer,
        kind=kind,
        audience="customer",
        control_percent=rule,
        global_percent=glob,
        global_kinds=GLOBAL_KINDS,
    )


def test_a_rule_holds_out_about_its_share_and_always_the_same_customers() -> None:
    held = [c for c in CUSTOMERS if in_rule_control("r", c, 20)]
    assert 0.17 < len(held) / len(CUSTOMERS) < 0.23
    assert held == [c for c in CUSTOMERS if in_rule_control("r", c, 20)]
    # Raising the share only adds customers: nobody moves from control to treatment.
    assert set(held) <= {c for c in CUSTOMERS if in_rule_control("r", c, 30)}
    # Another rule holds out other customers.
    assert held != [c for c in CUSTOMERS if in_rule_control("other", c, 20)]
    assert not any(in_rule_control("r", c, 0) for c in CUSTOMERS)


def test_the_global_group_is_independent_of_the_rules() -> None:
    group = {c for c in CUSTOMERS if in_global_control(c, 10)}
    assert 0.08 < len(group) / len(CUSTOMERS) < 0.12
    ruled = {c for c in CUSTOMERS if in_rule_control("r", c, 10)}
    # Independent draws overlap about 10% x 10%, not wholly.
    assert len(group & ruled) < len(group) / 3


def test_the_global_group_misses_only_its_kinds_and_team_alerts_have_no_arm() -> None:
    member = next(c for c in CUSTOMERS if in_global_control(c, 10))
    outsider = next(
        c for c in CUSTOMERS if not in_global_control(c, 10) and in_rule_control("r", c, 50)
    )
    for kind in ("greeting", "recall", "winback", "announcement"):
        assert arm(member, kind, glob=10) == "global_control"
    for kind in ("apology", "care", "follow_up"):
        assert arm(member, kind, glob=10) == "treatment"
    assert arm(outsider, glob=10, rule=50) == "control"
    assert arm(member, glob=0) == "treatment"


def test_a_team_alert_falls_in_its_rule_s_arms_and_never_in_the_global_control_group() -> None:
    # The call a team alert asks for reaches the customer through the shop's people: the
    # rule's hold-out measures it, while the global control group leaves the team informed.
    def team(customer: str, kind: str, rule: float) -> str | None:
        return arm_of(
            "r",
            customer,
            kind=kind,
            audience="team",
            control_percent=rule,
            global_percent=10,
            global_kinds=GLOBAL_KINDS,
        )

    member = next(c for c in CUSTOMERS if in_global_control(c, 10))
    assert [team(member, kind, 0) for kind in ("care", "winback")] == ["treatment"] * 2
    held = next(c for c in CUSTOMERS if in_rule_control("r", c, 50))
    called = next(c for c in CUSTOMERS if not in_rule_control("r", c, 50))
    assert (team(held, "care", 50), team(called, "care", 50)) == ("control", "treatment")


def held(days_ago: float, rule_id: str = "r") -> Contact:
    return Contact(NOON_PARIS - timedelta(days=days_ago), CONTROL, rule_id)


def test_a_control_decision_counts_for_its_rules_limits_like_a_sent_one() -> None:
    once = cand("recall", rule_id="r", limits=Limits(once=True))
    assert go(candidate=once, history=[held(300)]).reason is Reason.LIMIT
    most = cand("recall", rule_id="r", limits=Limits(max_per_customer=2))
    assert go(candidate=most, history=[held(100), sent(50, rule_id="r")]).reason is Reason.LIMIT
    cool = cand("recall", rule_id="r", limits=Limits(cooldown_days=30))
    assert go(candidate=cool, history=[held(10)]).reason is Reason.LIMIT
    # Another rule's control decision is not this rule's.
    assert go(candidate=once, history=[held(1, "other")]).outcome is Outcome.SEND


def test_a_control_decision_is_no_contact_for_the_cap_or_not_contacted_days() -> None:
    # Two control decisions a day ago would fill the cap if they were contacts.
    assert go(candidate=cand("recall"), history=[held(1), held(1.5)]).outcome is Outcome.SEND
    quiet = cand("care", rule_id="care", limits=Limits(not_contacted_days=60))
    assert go(candidate=quiet, history=[held(5, "other")]).outcome is Outcome.SEND


def test_a_held_out_candidate_leaves_its_cap_slot_to_the_next() -> None:
    # The cap has one slot left: a held-out win-back does not take it from the recall.
    winback = Candidate("w", "winback", "email", 9, held_out=True)
    recall = cand("recall", rule_id="r", priority=1)
    out = dict(
        (c.rule_id, d)
        for c, d in decide_all(
            card(), [winback, recall], [sent(1)], suppressed=False, policy=POLICY, now=NOON_PARIS
        )
    )
    assert out["w"].outcome is Outcome.SEND  # decided like the others (recorded as control)
    assert out["r"].outcome is Outcome.SEND
    # Treated alike, the win-back would have taken the last slot.
    treated = Candidate("w", "winback", "email", 9)
    out = dict(
        (c.rule_id, d)
        for c, d in decide_all(
            card(), [treated, recall], [sent(1)], suppressed=False, policy=POLICY, now=NOON_PARIS
        )
    )
    assert out["r"].outcome is Outcome.DEFER
    assert winback.contact_kind == CONTROL and treated.contact_kind == "winback"
