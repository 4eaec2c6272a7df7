"""The contact policy: consent, suppression, limits, complaints, the cap, quiet hours, rank."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any, NamedTuple

import pytest
from pydantic import ValidationError

from services.outreach.core.policy import (
    Candidate,
    Decision,
    Outcome,
    Policy,
    QuietHours,
    Reason,
    decide,
    decide_all,
    history_days,
    rank,
)
from services.outreach.core.rule_pack import default_pack
from services.outreach.core.rules import Limits, Match, Rule, preferred_channel


class Contact(NamedTuple):
    """One message the customer received (or that is already scheduled for them): a history
    entry as :func:`decide` reads it."""

    sent_at: datetime
    kind: str
    rule_id: str


POLICY = Policy()
NOON_PARIS = datetime(2025, 6, 2, 10, tzinfo=UTC)  # 12:00 CEST


def card(
    tz: str | None = "Europe/Paris",
    email: bool = True,
    marketing: bool = True,
    open_complaints: int = 0,
) -> dict[str, Any]:
    return {
        "customer_id": "c1",
        "profile": {
            "timezone": tz,
            "consent": {"email": email, "sms": False, "marketing": marketing},
        },
        "complaints": {"open": open_complaints, "total": open_complaints, "last_at": None},
    }


def cand(kind: str = "greeting", channel: str = "email", **kw: Any) -> Candidate:
    rule_id = kw.pop("rule_id", f"{kind}-rule")
    return Candidate(rule_id, kind, channel, **kw)  # type: ignore[arg-type]


def go(
    c: dict[str, Any] | None = None,
    candidate: Candidate | None = None,
    history: list[Contact] | None = None,
    *,
    suppressed: bool = False,
    policy: Policy = POLICY,
    now: datetime = NOON_PARIS,
) -> Decision:
    return decide(
        c if c is not None else card(),
        candidate or cand(),
        history or [],
        suppressed=suppressed,
        policy=policy,
        now=now,
    )


def sent(days_ago: float, kind: str = "greeting", rule_id: str = "other") -> Contact:
    return Contact(NOON_PARIS - timedelta(days=days_ago), kind, rule_id)


def test_a_consenting_customer_at_noon_is_sent_to() -> None:
    assert go().outcome is Outcome.SEND


# --- suppression and consent ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["greeting", "apology", "care", "announcement"])
def test_a_suppressed_customer_hears_nothing(kind: str) -> None:
    decision = go(candidate=cand(kind), suppressed=True)
    assert (decision.outcome, decision.reason) == (Outcome.SUPPRESS, Reason.SUPPRESSED)


@pytest.mark.parametrize(
    ("kind", "channel", "email", "marketing", "allowed"),
    [
        ("greeting", "email", False, True, False),  # email needs consent.email
        ("apology", "email", False, False, False),  # even for a transactional kind
        ("apology", "email", True, False, True),  # transactional: no marketing consent needed
        ("greeting", "webhook", False, False, False),  # marketing kind: consent.marketing
        ("greeting", "webhook", False, True, True),  # webhook needs no channel consent
        ("care", "webhook", False, False, True),
        ("winback", "email", True, False, False),
    ],
)
def test_consent(kind: str, channel: str, email: bool, marketing: bool, allowed: bool) -> None:
    decision = go(card(email=email, marketing=marketing), cand(kind, channel))
    if allowed:
        assert decision.outcome is Outcome.SEND
    else:
        assert (decision.outcome, decision.reason) == (Outcome.SUPPRESS, Reason.NO_CONSENT)


def test_marketing_consent_can_be_made_optional() -> None:
    relaxed = Policy(marketing_consent_required=False)
    decision = go(card(marketing=False), cand("greeting", "webhook"), policy=relaxed)
    assert decision.outcome is Outcome.SEND


def test_a_card_without_consent_fields_is_not_consent() -> None:
    decision = go({"customer_id": "c1"}, cand("greeting", "email"))
    assert decision.reason is Reason.NO_CONSENT


# --- rule limits ---------------------------------------------------------------------------


def test_once_max_and_cooldown_count_the_rules_own_messages() -> None:
    once = cand(rule_id="r", limits=Limits(once=True))
    assert go(candidate=once, history=[sent(400, rule_id="other")]).outcome is Outcome.SEND
    assert go(candidate=once, history=[sent(400, rule_id="r")]).reason is Reason.LIMIT
    most_two = cand(rule_id="r", limits=Limits(max_per_customer=2))
    assert go(candidate=most_two, history=[sent(100, rule_id="r")]).outcome is Outcome.SEND
    two = [sent(100, rule_id="r"), sent(200, rule_id="r")]
    assert go(candidate=most_two, history=two).reason is Reason.LIMIT
    cool = cand(rule_id="r", limits=Limits(cooldown_days=30))
    assert go(candidate=cool, history=[sent(29, rule_id="r")]).reason is Reason.LIMIT
    assert go(candidate=cool, history=[sent(31, rule_id="r")]).outcome is Outcome.SEND
    assert go(candidate=cool, history=[sent(1, rule_id="other")]).outcome is Outcome.SEND


def test_not_contacted_days_counts_every_message() -> None:
    care = cand("care", "webhook", rule_id="care", limits=Limits(not_contacted_days=60))
    decision = go(candidate=care, history=[sent(59, "apology", "someone-else")])
    assert (decision.reason, decision.detail) == (
        Reason.LIMIT,
        "not_contacted_days: contacted within 60 days",
    )
    assert go(candidate=care, history=[sent(61, "greeting")]).outcome is Outcome.SEND


# --- open complaints ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["recall", "winback", "announcement"])
def test_an_open_complaint_holds_promotions(kind: str) -> None:
    decision = go(card(open_complaints=1), cand(kind))
    assert (decision.outcome, decision.reason) == (Outcome.HOLD, Reason.OPEN_COMPLAINT)


@pytest.mark.parametrize("kind", ["apology", "care", "greeting", "follow_up"])
def test_an_open_complaint_lets_other_kinds_through(kind: str) -> None:
    assert go(card(open_complaints=2), cand(kind)).outcome is Outcome.SEND


# --- frequency cap --------------------------------------------------------------------------


def test_at_most_two_messages_per_seven_days() -> None:
    assert go(history=[sent(1)]).outcome is Outcome.SEND
    decision = go(history=[sent(1), sent(6.9)])
    assert (decision.outcome, decision.reason) == (Outcome.SUPPRESS, Reason.FREQUENCY_CAP)
    assert go(history=[sent(1), sent(7.1)]).outcome is Outcome.SEND  # out of the window


def test_the_cap_postpones_a_recall_to_the_first_free_slot() -> None:
    # Two messages, 1 and 6.9 days ago: a slot frees when the older one is 7 days old.
    decision = go(candidate=cand("recall"), history=[sent(1), sent(6.9)])
    assert (decision.outcome, decision.reason) == (Outcome.DEFER, Reason.FREQUENCY_CAP)
    assert decision.until == NOON_PARIS + timedelta(days=0.1)
    # A slot that frees at night waits for the end of quiet hours: 08:00 in Paris.
    late = go(candidate=cand("recall"), history=[sent(1), sent(6.6)])
    assert late.until == datetime(2025, 6, 3, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "waits"),
    [("winback", True), ("recall", True), ("follow_up", False), ("greeting", False)],
)
def test_a_kind_waits_for_the_cap_only_within_its_horizon(kind: str, waits: bool) -> None:
    # The cap is full for five more days: a win-back (14) or recall (7) waits, a follow-up
    # (3) is dropped, a greeting belongs to its day.
    decision = go(candidate=cand(kind), history=[sent(2), sent(2.5)])
    expected = Outcome.DEFER if waits else Outcome.SUPPRESS
    assert (decision.outcome, decision.reason) == (expected, Reason.FREQUENCY_CAP)


def test_higher_priority_takes_the_free_slot_and_the_next_waits_for_the_following() -> None:
    cs = [cand("recall", rule_id="low", priority=1), cand("winback", rule_id="high", priority=9)]
    out = decide_all(card(), cs, [sent(1)], suppressed=False, policy=POLICY, now=NOON_PARIS)
    decisions = {c.rule_id: d for c, d in out}
    assert decisions["high"].outcome is Outcome.SEND
    # The slot frees when the message of a day ago is 7 days old: in 6 days, at noon.
    assert (decisions["low"].outcome, decisions["low"].until) == (
        Outcome.DEFER,
        NOON_PARIS + timedelta(days=6),
    )
    # A third would find both windows full until the message sent now ages out.
    third = decide_all(
        card(),
        [*cs, cand("recall", rule_id="mid", priority=5)],
        [sent(1)],
        suppressed=False,
        policy=POLICY,
        now=NOON_PARIS,
    )
    assert {c.rule_id: d.until for c, d in third}["low"] == NOON_PARIS + timedelta(days=7)


def team_alert(**kw: Any) -> Candidate:
    return Candidate("alert", "care", "webhook", 90, audience="team", **kw)


def test_a_team_alert_goes_whatever_the_customer_allows_and_is_never_a_contact() -> None:
    night = datetime(2025, 6, 2, 1, tzinfo=UTC)
    no_consent = card(email=False, marketing=False, open_complaints=1)
    full = [sent(1), sent(2)]
    for decision in (
        go(no_consent, team_alert(), full, suppressed=True, now=night),
        go(candidate=team_alert(), history=full),
    ):
        assert decision.outcome is Outcome.SEND
    # Its own limits still hold.
    once = team_alert(limits=Limits(cooldown_days=1))
    alerted = [Contact(NOON_PARIS - timedelta(hours=2), "team", "alert")]
    assert go(candidate=once, history=alerted).reason is Reason.LIMIT
    # An alert is neither a contact nor a cap slot for the customer's own messages.
    quiet_60 = cand("care", rule_id="call", limits=Limits(not_contacted_days=60))
    assert go(candidate=quiet_60, history=alerted).outcome is Outcome.SEND
    assert go(candidate=cand("recall"), history=[sent(1), *alerted]).outcome is Outcome.SEND


def test_transactional_messages_neither_count_nor_are_capped() -> None:
    assert go(history=[sent(1, "apology"), sent(2, "care"), sent(3)]).outcome is Outcome.SEND
    full = [sent(1), sent(2)]
    assert go(candidate=cand("apology"), history=full).outcome is Outcome.SEND


# --- quiet hours ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "until"),
    [
        # 22:30 CEST -> 08:00 CEST the next morning
        (datetime(2025, 6, 2, 20, 30, tzinfo=UTC), datetime(2025, 6, 3, 6, tzinfo=UTC)),
        # 03:00 CEST -> 08:00 CEST the same morning
        (datetime(2025, 6, 2, 1, tzinfo=UTC), datetime(2025, 6, 2, 6, tzinfo=UTC)),
        # the night clocks go forward: 08:00 CEST
        (datetime(2025, 3, 29, 22, tzinfo=UTC), datetime(2025, 3, 30, 6, tzinfo=UTC)),
        # the night clocks go back: 08:00 CET
        (datetime(2025, 10, 25, 21, tzinfo=UTC), datetime(2025, 10, 26, 7, tzinfo=UTC)),
    ],
)
def test_quiet_hours_defer_to_eight_local_never_drop(now: datetime, until: datetime) -> None:
    decision = go(now=now)
    assert (decision.outcome, decision.reason, decision.until) == (
        Outcome.DEFER,
        Reason.QUIET_HOURS,
        until,
    )


def test_quiet_hours_bounds_and_zones() -> None:
    assert go(now=datetime(2025, 6, 2, 6, tzinfo=UTC)).outcome is Outcome.SEND  # 08:00 sharp
    assert go(now=datetime(2025, 6, 2, 18, 59, tzinfo=UTC)).outcome is Outcome.SEND  # 20:59
    assert go(now=datetime(2025, 6, 2, 19, tzinfo=UTC)).outcome is Outcome.DEFER  # 21:00
    # Noon in Paris is 06:00 in New York: deferred to 08:00 EDT.
    ny = go(card("America/New_York"), now=NOON_PARIS)
    assert ny.until == datetime(2025, 6, 2, 12, tzinfo=UTC)
    # No zone on the card: the policy's default. 13:00 UTC is 22:00 in Tokyo.
    tokyo = Policy(default_timezone="Asia/Tokyo")
    late = datetime(2025, 6, 2, 13, tzinfo=UTC)
    assert go(card(tz=None), policy=tokyo, now=late).until == datetime(2025, 6, 2, 23, tzinfo=UTC)
    assert go(card(tz=None), now=late).outcome is Outcome.SEND  # 13:00 in UTC


def test_quiet_hours_within_one_day_and_none() -> None:
    lunch = Policy(quiet_hours=QuietHours(start=time(12), end=time(14)))
    assert go(policy=lunch).until == datetime(2025, 6, 2, 12, tzinfo=UTC)
    night = datetime(2025, 6, 2, 1, tzinfo=UTC)
    assert go(policy=Policy(quiet_hours=None), now=night).outcome is Outcome.SEND


def test_transactional_kinds_ignore_quiet_hours() -> None:
    night = datetime(2025, 6, 2, 1, tzinfo=UTC)
    assert go(candidate=cand("apology"), now=night).outcome is Outcome.SEND


def test_a_cap_beats_quiet_hours() -> None:
    night = datetime(2025, 6, 2, 1, tzinfo=UTC)
    assert go(history=[sent(1), sent(2)], now=night).reason is Reason.FREQUENCY_CAP


# --- competing candidates -----------------------------------------------------------------


def test_rank_by_priority_then_rule_id() -> None:
    cs = [cand(rule_id=r, priority=p) for r, p in (("b", 5), ("a", 5), ("z", 9))]
    assert [c.rule_id for c in rank(cs)] == ["z", "a", "b"]


def test_the_last_cap_slot_goes_to_the_highest_priority() -> None:
    cs = [
        cand("greeting", rule_id="low", priority=1),
        cand("recall", rule_id="high", priority=50),
        cand("apology", rule_id="sorry", priority=0),
        cand("follow_up", rule_id="mid", priority=10),
    ]
    out = decide_all(card(), cs, [sent(1)], suppressed=False, policy=POLICY, now=NOON_PARIS)
    decisions = {c.rule_id: d for c, d in out}
    assert decisions["high"].outcome is Outcome.SEND
    assert decisions["sorry"].outcome is Outcome.SEND  # transactional: no slot needed
    assert decisions["mid"].reason is Reason.LOWER_PRIORITY
    assert decisions["low"].reason is Reason.LOWER_PRIORITY


def test_a_cap_full_before_the_batch_is_frequency_cap_not_lower_priority() -> None:
    cs = [cand(rule_id="a", priority=2), cand(rule_id="b", priority=1)]
    full = [sent(1), sent(2)]
    out = decide_all(card(), cs, full, suppressed=False, policy=POLICY, now=NOON_PARIS)
    assert [d.reason for _, d in out] == [Reason.FREQUENCY_CAP, Reason.FREQUENCY_CAP]


def test_deferred_actions_take_their_slot() -> None:
    night = datetime(2025, 6, 2, 1, tzinfo=UTC)
    cs = [cand(rule_id=f"r{i}", priority=i) for i in range(3)]
    out = decide_all(card(), cs, [], suppressed=False, policy=POLICY, now=night)
    assert [(c.rule_id, d.outcome) for c, d in out] == [
        ("r2", Outcome.DEFER),
        ("r1", Outcome.DEFER),
        ("r0", Outcome.SUPPRESS),
    ]


def test_a_rule_whose_day_is_spent_leaves_its_cap_slot_to_the_next() -> None:
    daily = Limits(max_per_day=5)
    cs = [cand("recall", rule_id="high", priority=50, limits=daily), cand(rule_id="low")]
    spent = {"high": 0}
    out = decide_all(
        card(), cs, [sent(1)], suppressed=False, policy=POLICY, now=NOON_PARIS, daily_left=spent
    )
    decisions = {c.rule_id: d for c, d in out}
    assert decisions["high"].reason is Reason.DAILY_LIMIT
    assert decisions["high"].detail == "the rule's daily limit of 5 is reached"
    assert decisions["low"].outcome is Outcome.SEND  # the last cap slot was free for it
    assert spent == {"high": 0}
    # With a slot left the rule takes it, and the one after it is capped as usual.
    left = {"high": 2}
    out = decide_all(
        card(), cs, [sent(1)], suppressed=False, policy=POLICY, now=NOON_PARIS, daily_left=left
    )
    assert [(c.rule_id, d.outcome, d.reason) for c, d in out] == [
        ("high", Outcome.SEND, None),
        ("low", Outcome.SUPPRESS, Reason.LOWER_PRIORITY),
    ]
    assert left == {"high": 1}


def test_a_day_s_slot_is_taken_by_whatever_would_go_out_and_by_nothing_else() -> None:
    daily = Limits(max_per_day=3)
    left = {"r": 3}

    def one(c: dict[str, Any], candidate: Candidate, now: datetime = NOON_PARIS) -> Decision:
        [(_, d)] = decide_all(
            c, [candidate], [], suppressed=False, policy=POLICY, now=now, daily_left=left
        )
        return d

    night = datetime(2025, 6, 2, 1, tzinfo=UTC)
    assert one(card(email=False), cand(rule_id="r", limits=daily)).reason is Reason.NO_CONSENT
    assert left == {"r": 3}  # nobody would have been reached: no slot
    assert one(card(), cand(rule_id="r", limits=daily, held_out=True)).outcome is Outcome.SEND
    assert one(card(), cand(rule_id="r", limits=daily), night).outcome is Outcome.DEFER
    held = one(card(open_complaints=1), cand("recall", rule_id="r", limits=daily))
    assert held.outcome is Outcome.HOLD
    # The control arm's, the deferred and the held took a slot each: the day is spent.
    assert left == {"r": 0}
    assert one(card(), cand(rule_id="r", limits=daily)).reason is Reason.DAILY_LIMIT


# --- settings and helpers --------------------------------------------------------------------


def test_policy_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="start and end must differ"):
        QuietHours(start=time(8), end=time(8))
    with pytest.raises(ValidationError, match="IANA"):
        Policy(default_timezone="Europe/Atlantis")
    with pytest.raises(ValidationError, match="transactional and promotional"):
        Policy(promotional_kinds=frozenset({"apology"}))
    with pytest.raises(ValidationError, match="Extra inputs"):
        Policy.model_validate({"frequency_cap": {"count": 2, "days": 7, "per": "week"}})


def test_history_days_covers_every_window() -> None:
    assert history_days(Limits(), POLICY) == 7
    assert history_days(Limits(cooldown_days=60, not_contacted_days=90), POLICY) == 90
    assert history_days(Limits(), Policy(frequency_cap=None)) == 0


def test_candidates_from_the_default_pack() -> None:
    pack = {r.id: r for r in default_pack()}
    care = Candidate.of(pack["care-key-quiet"])
    assert (care.kind, care.channel, care.limits.not_contacted_days) == ("care", "webhook", 60)
    # Its text asks the team for a personal call: it goes to the team, not the customer.
    assert care.audience == "team"
    winback = Candidate.of(Match(pack["winback-churned"], "c1", "change-1"))
    assert (winback.rule_id, winback.priority) == ("winback-churned", 60)


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        go(now=datetime(2025, 6, 2, 10))


def test_a_preferred_action_takes_the_customers_own_channel_when_they_consented_to_it() -> None:
    def card(preferred: str | None, **consent: bool) -> dict[str, Any]:
        return {"profile": {"preferred_channel": preferred, "consent": consent}}

    assert preferred_channel(card("sms", email=True, sms=True)) == "sms"
    # Preferred but not consented: their consented channel instead.
    assert preferred_channel(card("sms", email=True, sms=False)) == "email"
    assert preferred_channel(card(None, email=False, sms=True)) == "sms"
    assert preferred_channel(card(None, email=True, sms=True)) == "email"
    # Neither: email, which the consent check then suppresses.
    assert preferred_channel(card(None)) == "email"
    rule = Rule.model_validate(
        {
            "id": "news",
            "name": "news",
            "trigger": {"type": "event", "event": "visit.recorded"},
            "action": {
                "kind": "greeting",
                "channel": "preferred",
                "template": {"subject": "Hello", "body": "Hello"},
            },
        }
    )
    texts = {**card("sms", sms=True, marketing=True), "customer_id": "c1"}
    silent = {**card(None, marketing=True), "customer_id": "c2"}
    decided = [
        decide(c, Candidate.of(rule), [], suppressed=False, policy=POLICY, now=NOON_PARIS).outcome
        for c in (texts, silent)
    ]
    assert decided == [Outcome.SEND, Outcome.SUPPRESS]
