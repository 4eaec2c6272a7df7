"""A cap slot held by an action still waiting to go out is given to a later action of higher
priority (pure): the waiting one of lowest rank gives it up, nothing else changes hands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.outreach.core.policy import (
    Candidate,
    Decision,
    Outcome,
    Policy,
    Reason,
    Waiting,
    decide_all,
    yield_slots,
)
from tests.unit.test_policy import Contact, cand, card, sent

POLICY = Policy()  # two messages a week; quiet from 21:00 to 08:00
NIGHT = datetime(2025, 6, 2, 21, tzinfo=UTC)  # 23:00 in Paris: quiet hours
MORNING = datetime(2025, 6, 3, 6, tzinfo=UTC)  # 08:00 in Paris, when they end


def waiting(rule_id: str, priority: int, at: datetime = MORNING) -> Waiting:
    """An announcement decided earlier tonight, waiting for the morning."""
    return Waiting(f"a-{rule_id}", Candidate(rule_id, "announcement", "email", priority), at)


def entries(*ws: Waiting) -> list[Contact]:
    return [Contact(w.at, w.candidate.kind, w.candidate.rule_id) for w in ws]


def decided(candidate: Candidate, history: list[Contact]) -> list[tuple[Candidate, Decision]]:
    return decide_all(card(), [candidate], history, suppressed=False, policy=POLICY, now=NIGHT)


def yielded(
    candidate: Candidate,
    history: list[Contact],
    ws: list[Waiting],
    daily_left: dict[str, int] | None = None,
) -> tuple[list[tuple[Candidate, Decision]], list[tuple[Waiting, Decision]]] | None:
    first = decided(candidate, history)
    return yield_slots(
        card(),
        [candidate],
        first,
        history,
        ws,
        suppressed=False,
        policy=POLICY,
        now=NIGHT,
        daily_left=daily_left,
    )


def test_a_higher_priority_takes_the_slot_of_the_lowest_ranked_waiting_action() -> None:
    news, sale = waiting("news", 20), waiting("sale", 15)
    history = entries(news, sale)
    thanks = cand("follow_up", rule_id="thanks", priority=30)
    # Alone, the two waiting announcements fill the week's two slots.
    [(_, stopped)] = decided(thanks, history)
    assert (stopped.outcome, stopped.reason) == (Outcome.SUPPRESS, Reason.FREQUENCY_CAP)
    got = yielded(thanks, history, [news, sale])
    assert got is not None
    mine, gave_up = got
    assert [(c.rule_id, d.outcome, d.until) for c, d in mine] == [
        ("thanks", Outcome.DEFER, MORNING)
    ]
    [(gone, why)] = gave_up
    assert (gone.action_id, why.outcome, why.reason) == (
        "a-sale",
        Outcome.SUPPRESS,
        Reason.LOWER_PRIORITY,
    )
    assert why.detail == ("gave its frequency-cap slot to thanks (priority 30) before it went out")


def test_a_waiting_action_of_equal_or_higher_priority_keeps_its_slot() -> None:
    news, vip = waiting("news", 30), waiting("vip", 40)
    thanks = cand("follow_up", rule_id="thanks", priority=30)
    assert yielded(thanks, entries(news, vip), [news, vip]) is None


def test_nothing_changes_hands_when_sent_messages_fill_the_cap() -> None:
    news = waiting("news", 10)
    history = [sent(1, "announcement"), sent(2, "announcement"), *entries(news)]
    thanks = cand("follow_up", rule_id="thanks", priority=30)
    assert yielded(thanks, history, [news]) is None


def test_a_waiting_action_that_would_go_out_at_another_instant_is_left_alone() -> None:
    # Waiting for noon (a cap deferral, say), where deciding it again would say the morning:
    # giving its slot away would rewrite more than the slot, so nothing changes.
    noon = MORNING.replace(hour=10)
    news, sale = waiting("news", 20, noon), waiting("sale", 15)
    thanks = cand("follow_up", rule_id="thanks", priority=30)
    assert yielded(thanks, entries(news, sale), [news, sale]) is None


def test_a_rule_s_daily_budget_is_taken_once() -> None:
    news, sale = waiting("news", 20), waiting("sale", 15)
    thanks = cand("follow_up", rule_id="thanks", priority=30)
    history = entries(news, sale)
    left = {"thanks": 5}
    first = decide_all(
        card(), [thanks], history, suppressed=False, policy=POLICY, now=NIGHT, daily_left=left
    )
    assert first[0][1].reason is Reason.FREQUENCY_CAP
    assert left == {"thanks": 5}  # suppressed by the cap: no slot of the day taken
    got = yielded(thanks, history, [news, sale], daily_left=left)
    assert got is not None and left == {"thanks": 4}
    # A waiting action of a budgeted rule holds its day's slot: it is not decided again.
    left = {"sale": 3}
    got = yielded(thanks, history, [news, sale], daily_left=left)
    assert got is not None and [w.action_id for w, _ in got[1]] == ["a-news"]
    assert left == {"sale": 3}


def test_a_cap_full_of_waiting_messages_says_so() -> None:
    # Nothing went out this week yet: the two slots are held by messages waiting to go.
    news, sale = waiting("news", 40), waiting("sale", 35)
    thanks = cand("follow_up", rule_id="thanks", priority=30)
    [(_, stopped)] = decided(thanks, entries(news, sale))
    assert stopped.reason is Reason.FREQUENCY_CAP
    assert stopped.detail == "0 messages in the last 7 days and 2 waiting to go out (cap 2)"
    [(_, full)] = decided(thanks, [sent(1, "announcement"), sent(2, "announcement")])
    assert full.detail == "2 messages in the last 7 days (cap 2)"


def test_a_waiting_action_within_its_horizon_waits_for_the_next_free_slot() -> None:
    # Announcements may wait two weeks for the cap: the sale waits for the week's next slot.
    patient = Policy(cap_defer_days={"announcement": 14, "follow_up": 3})
    news, sale = waiting("news", 20), waiting("sale", 15)
    history = entries(news, sale)
    thanks = cand("follow_up", rule_id="thanks", priority=30)
    first = decide_all(card(), [thanks], history, suppressed=False, policy=patient, now=NIGHT)
    got = yield_slots(
        card(), [thanks], first, history, [news, sale], suppressed=False, policy=patient, now=NIGHT
    )
    assert got is not None
    [(gone, why)] = got[1]
    assert gone.action_id == "a-sale"
    assert (why.outcome, why.reason) == (Outcome.DEFER, Reason.LOWER_PRIORITY)
    assert why.until is not None and why.until >= MORNING + timedelta(days=7)
    assert why.detail == "gave its frequency-cap slot to thanks (priority 30); waits for the next"


def test_a_candidate_the_cap_pushed_back_a_week_goes_in_the_morning() -> None:
    patient = Policy(cap_defer_days={"recall": 14})  # a recall may wait two weeks
    news, sale = waiting("news", 20), waiting("sale", 15)
    history = entries(news, sale)
    recall = cand("recall", rule_id="recall", priority=50)
    first = decide_all(card(), [recall], history, suppressed=False, policy=patient, now=NIGHT)
    [(_, pushed)] = first
    assert (pushed.outcome, pushed.reason) == (Outcome.DEFER, Reason.FREQUENCY_CAP)
    assert pushed.until is not None and pushed.until > MORNING + timedelta(days=6)
    got = yield_slots(
        card(), [recall], first, history, [news, sale], suppressed=False, policy=patient, now=NIGHT
    )
    assert got is not None
    assert [(d.outcome, d.until) for _, d in got[0]] == [(Outcome.DEFER, MORNING)]
    # The sale (announcements may not wait past a week) gives its slot up.
    assert [(w.action_id, d.outcome) for w, d in got[1]] == [("a-sale", Outcome.SUPPRESS)]


def test_a_waiting_action_the_cap_does_not_count_is_left_out() -> None:
    # A care message waiting (were one ever deferred) holds no cap slot: deciding it again
    # would send it at once, and it must not stop the announcement's slot changing hands.
    care = Waiting("a-care", Candidate("care", "care", "email", 5), MORNING)
    news, sale = waiting("news", 20), waiting("sale", 15)
    thanks = cand("follow_up", rule_id="thanks", priority=30)
    got = yielded(thanks, entries(news, sale, care), [news, sale, care])
    assert got is not None
    assert [w.action_id for w, _ in got[1]] == ["a-sale"]
