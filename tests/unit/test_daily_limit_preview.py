"""A rule's daily limit in a dry run (pure): whatever order the audience comes in, each day's
slots go to its most valuable customers, and the others are counted as held back by it."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from services.outreach.core.arms import in_global_control, in_rule_control
from services.outreach.core.policy import Candidate, Outcome, Policy, Waiting
from services.outreach.core.preview import PreviewCoverage, PreviewResult, Tally
from services.outreach.core.rules import Rule
from services.outreach.core.templates import SAMPLE_CARD

NOW = datetime(2030, 6, 14, 6, tzinfo=UTC)  # before 09:00: today's birthdays are to come
COVERED = PreviewCoverage(customers=8, complete=True, cut_by=None)


def birthday_rule(per_day: int | None, control_percent: float = 0, priority: int = 0) -> Rule:
    return Rule.model_validate(
        {
            "id": "birthday",
            "name": "birthday",
            "priority": priority,
            "trigger": {"type": "schedule", "kind": "birthday", "at": "09:00"},
            "action": {"kind": "greeting", "channel": "webhook", "template": {"body": "Hi"}},
            "limits": {"max_per_day": per_day},
            "control_percent": control_percent,
        }
    )


def card(customer_id: str, birthday: str, score: float) -> dict[str, Any]:
    c = copy.deepcopy(dict(SAMPLE_CARD))
    c["customer_id"] = customer_id
    c["value_score"] = score
    c["profile"] = {**c["profile"], "birthday": birthday, "timezone": "UTC"}
    return c


# Three birthdays tomorrow (value 1 to 3) and three the day after (4 to 6).
AUDIENCE = [card(f"t{n}", "1990-06-15", n) for n in (1, 2, 3)] + [
    card(f"a{n}", "1990-06-16", n) for n in (4, 5, 6)
]


def preview(
    cards: list[dict[str, Any]],
    per_day: int | None,
    spent_today: int = 0,
    control_percent: float = 0,
    global_control_percent: float = 0,
) -> PreviewResult:
    tally = Tally(
        birthday_rule(per_day, control_percent),
        Policy(),
        NOW,
        spent_today=spent_today,
        global_control_percent=global_control_percent,
    )
    for c in cards:
        tally.add(c["customer_id"], c, [], suppressed=False)
    return tally.result(COVERED)


def test_each_day_s_slots_go_to_its_most_valuable_whatever_the_order() -> None:
    for seed in range(5):
        cards = AUDIENCE[:]
        random.Random(seed).shuffle(cards)
        got = preview(cards, per_day=2)
        assert got.outcomes[Outcome.SEND] == 4
        assert got.outcomes[Outcome.SUPPRESS] == 2
        assert got.reasons == {"daily_limit": 2}
        assert got.held_back == 2
        upcoming = {u.customer_id: u.outcome for u in got.upcoming or []}
        assert upcoming == {
            "t3": Outcome.SEND,
            "t2": Outcome.SEND,
            "t1": Outcome.SUPPRESS,
            "a6": Outcome.SEND,
            "a5": Outcome.SEND,
            "a4": Outcome.SUPPRESS,
        }


def test_what_the_ledger_says_today_took_counts_for_today_alone() -> None:
    # Two birthdays today as well; the ledger says one of today's two slots is taken.
    today = [card("d7", "1990-06-14", 7), card("d8", "1990-06-14", 8)]
    got = preview(today + AUDIENCE, per_day=2, spent_today=1)
    upcoming = {u.customer_id: u.outcome for u in got.upcoming or []}
    assert (upcoming["d8"], upcoming["d7"]) == (Outcome.SEND, Outcome.SUPPRESS)
    # Tomorrow's and the day after's slots are whole.
    assert got.outcomes[Outcome.SEND] == 1 + 2 + 2
    assert got.reasons == {"daily_limit": 1 + 1 + 1}
    assert preview(AUDIENCE, per_day=3).reasons == {}


def test_the_hold_out_is_the_live_draw_and_counts_only_customers_in_the_day_s_slots() -> None:
    ids = [f"c{n}" for n in range(200)]
    held = [c for c in ids if in_rule_control("birthday", c, 50)]
    glob = [c for c in ids if in_global_control(c, 10)]
    tomorrow = [card(c, "1990-06-15", n) for n, c in enumerate(ids)]
    assert preview(tomorrow, None).held_out == 0
    assert preview(tomorrow, None, control_percent=50).held_out == len(held)
    # A greeting is of the global control group's kinds: its customers are held out too.
    both = preview(tomorrow, None, control_percent=50, global_control_percent=10)
    assert both.held_out == len(set(held) | set(glob))
    # Two slots a day: only those who keep a slot count, the most valuable two.
    kept = ids[-2:]
    got = preview(tomorrow, 2, control_percent=50)
    assert got.held_out == sum(c in held for c in kept)
    assert got.outcomes[Outcome.SEND] == 2


def test_a_preview_takes_slots_from_waiting_lower_priorities_as_the_live_decision_does() -> None:
    # Quiet until 18:00. Each birthday customer's week is full of two announcements
    # (priority 10) decided earlier: for t1 and t2 they wait for the birthday's evening, for
    # t3 they go out this morning, before the birthday.
    policy = Policy.model_validate({"quiet_hours": {"start": "06:00", "end": "18:00"}})
    evening, morning = datetime(2030, 6, 15, 18, tzinfo=UTC), NOW + timedelta(hours=1)

    def judged(per_day: int | None) -> PreviewResult:
        tally = Tally(birthday_rule(per_day, priority=50), policy, NOW)
        for c, at in ((AUDIENCE[0], evening), (AUDIENCE[1], evening), (AUDIENCE[2], morning)):
            ws = [
                Waiting(f"{c['customer_id']}-{r}", Candidate(r, "announcement", "email", 10), at)
                for r in ("news", "sale")
            ]
            history = [(w.at, "announcement", w.candidate.rule_id) for w in ws]
            tally.add(c["customer_id"], c, history, suppressed=False, waiting=ws)
        return tally.result(COVERED)

    # The greeting outranks them: t1's and t2's wait for the evening with one announcement
    # each, the other giving its slot up; t3's week was full before the birthday came.
    free = judged(None)
    assert free.outcomes[Outcome.DEFER] == 2
    assert free.reasons == {"quiet_hours": 2, "frequency_cap": 1}
    assert free.gives_way == 2
    # With one slot a day, only the more valuable t2 takes one, so one message gives way.
    one = judged(1)
    assert one.reasons == {"quiet_hours": 1, "daily_limit": 1, "frequency_cap": 1}
    assert (one.outcomes[Outcome.DEFER], one.gives_way) == (1, 1)
