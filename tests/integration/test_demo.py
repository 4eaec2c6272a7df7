"""The numbers `make run` prints are right: the same seeded data through the real pipeline,
checked against an independent computation from the CSV and the generated events."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import text

from cli.replay import ReplayReport, post_events
from services.outreach.core.rule_pack import PLAYBOOK_STRATEGY
from services.outreach.settings import OutreachSettings
from shared.settings import CommonSettings
from tests.support.pipeline import outreach_has_seen, until
from tests.support.receivers import SmtpReceiver
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo", ROOT / "deploy" / "local" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def _from_csv(path: Path) -> tuple[dict[str, Decimal], dict[str, str]]:
    """Per customer: total spend and last purchase day (YYYYMMDD), read straight from the
    file with nothing of Tend's."""
    spend: dict[str, Decimal] = defaultdict(Decimal)
    last: dict[str, str] = {}
    for line in path.read_text().splitlines():
        cid, _, day, _, amount = line.split()
        spend[cid] += Decimal(amount).quantize(Decimal("0.01"))
        last[cid] = max(last.get(cid, day), day)
    return dict(spend), last


async def test_the_summary_of_the_seeded_replay_matches_an_independent_computation(
    settings: CommonSettings,
) -> None:
    demo = _demo()
    today = datetime.now(UTC).date()
    events = demo.demo_events(demo.shifted(demo.read_cdnow(demo.cdnow_sample()), today), today)
    async with (
        SmtpReceiver() as smtp,
        isolated_stack(settings, outreach=OutreachSettings(smtp_port=smtp.port)) as stack,
    ):
        assert stack.outreach is not None
        marketing = stack.auth("marketing")
        resp = await stack.outreach.post("/v1/rule-packs/default", headers=marketing)
        assert resp.status_code == 200, resp.text
        report = ReplayReport()
        stack.ingest.headers.update(stack.auth("ingest"))
        await post_events(stack.ingest, list(enumerate(events, start=1)), report)
        assert (report.accepted, report.rejected) == (len(events), 0)
        customers, revenue = demo.expected_totals(events)
        await demo.wait_scored(stack.scoring, stack.keys["ops"], customers, revenue)
        resp = await stack.scoring.post("/v1/ops/refit", headers=stack.auth("ops"))
        assert resp.status_code == 200, resp.text
        apologies = _expected_apologies(events)
        await _until_decided(stack, apologies)

        # The story is not only apologies: the imported history is judged, so lost key and
        # regular customers are won back and the due recalls and follow-ups go out.
        async def story_told() -> set[str] | None:
            assert stack.outreach is not None
            ops = stack.auth("ops")
            (await stack.outreach.post("/v1/ops/tick", headers=ops)).raise_for_status()
            rows = (await stack.outreach.get("/v1/actions/summary", headers=ops)).json()["rows"]
            kinds = {r["kind"] for r in rows}
            return kinds if {"winback", "recall", "follow_up"} <= kinds else None

        await until(story_told, 120, "win-backs, recalls and follow-ups decided")
        # Each strategy's playbook acts on the history, holding out its control group. The
        # broadcasts reach the customers outreach's replica holds: the whole history's.
        await demo.wait_outreach_caught_up(stack.scoring, stack.outreach, stack.keys["ops"])
        await demo.launch_broadcasts(stack.outreach, stack.keys["marketing"])
        acted = await until(lambda: _playbooks_acted(stack), 120, "every playbook acting")
        summary = await demo.fetch_summary(stack.scoring, stack.outreach, stack.keys["ops"])
        async with stack.engine.connect() as conn:
            # A scheduled rule's daily limit leaves the customers it passes over in its line,
            # never a suppression a day each.
            scheduled_over_budget = await conn.scalar(
                text(
                    "SELECT count(*) FROM outreach.actions a JOIN outreach.rules r "
                    "ON r.id = a.rule_id WHERE a.reason = 'daily_limit' "
                    "AND r.definition -> 'trigger' ->> 'type' = 'schedule'"
                )
            )
            reduce_cost_promoted = await conn.scalar(
                text(
                    "SELECT count(*) FROM outreach.actions WHERE strategy = 'reduce_cost' "
                    "AND kind IN ('recall', 'winback', 'announcement') "
                    "AND status IN ('pending', 'sent', 'scheduled', 'held')"
                )
            )
        # The weeks after, SIMULATED as make run does: the customers touched respond (a little
        # more often when the message was sent), and the outcomes have real conversions.
        simulated_at = datetime.now(UTC)
        touches = await demo.touched(stack.outreach, stack.keys["ops"], simulated_at)
        responses = demo.simulated_responses(touches, simulated_at)
        simulated = ReplayReport()
        await post_events(stack.ingest, list(enumerate(responses, start=1)), simulated)
        await outreach_has_seen(stack, simulated.event_ids, timeout=120)
        ops = stack.auth("ops")
        # What acting had achieved once the simulated orders came, as make run prints.
        params = {"by": "rule", "as_of": simulated_at.isoformat()}
        outcomes = (await stack.outreach.get("/v1/outcomes", params=params, headers=ops)).json()
        async with stack.engine.connect() as conn:
            # Who each rule touched, when, and in which arm.
            arms = (
                await conn.execute(
                    text(
                        "SELECT rule_id, arm, customer_id, CASE WHEN status = 'sent' "
                        "THEN coalesce(sent_at, decided_at) ELSE coalesce(not_before, "
                        "decided_at) END AS touched_at FROM outreach.actions "
                        "WHERE arm IN ('treatment', 'control') "
                        "AND status IN ('sent', 'control') AND decided_at < :at"
                    ),
                    {"at": simulated_at},
                )
            ).all()
        # Read again later, as a second make run does, after what the orders set off: the
        # table as it stood then is the same.
        await until(lambda: _follow_ups_decided(stack, simulated_at), 60, "follow-ups decided")
        again = (await stack.outreach.get("/v1/outcomes", params=params, headers=ops)).json()
        flow = (
            await stack.scoring.get("/v1/stats/flow", params={"period": "quarter"}, headers=ops)
        ).json()

    spend, last = _from_csv(demo.cdnow_sample())
    o = summary.overview
    assert o["customers"] == o["buyers"] == len(spend) == 2357
    assert Decimal(o["lifetime_revenue"]) == sum(spend.values())
    ranked = sorted(spend.values(), reverse=True)
    top = sum(ranked[: math.ceil(len(ranked) / 5)])
    assert o["top20_revenue_share"] == pytest.approx(float(top / sum(ranked)), abs=1e-9)
    assert sum(o["by_stage"].values()) == 2357
    shift = today - max(datetime.strptime(d, "%Y%m%d").date() for d in last.values())
    silent_a_year = sum(
        1
        for d in last.values()
        if (today - (datetime.strptime(d, "%Y%m%d").date() + shift)).days > 365
    )
    assert o["by_stage"]["churned"] >= silent_a_year  # churned at 365 days silent, if not before
    assert sum(o["by_tier"].values()) == 2357
    assert o["by_tier"]["key"] == pytest.approx(0.2 * 2357, abs=1)

    sent: defaultdict[str, int] = defaultdict(int)
    for row in summary.actions["rows"]:
        if row["status"] in ("pending", "sent"):
            sent[row["kind"]] += row["count"]
    assert sent["apology"] == apologies
    assert scheduled_over_budget == 0
    waiting = sum(r["waiting_for_a_slot"] for r in summary.rules["items"])
    assert any("In line for a rule's next daily slots" in line for line in summary.lines()) == (
        waiting > 0
    )
    # Reduce cost is a policy: none of its customers is sent a promotion.
    assert reduce_cost_promoted == 0
    # Every simulated order answers each rule that touched its customer, in the arm they were
    # in: every rule is measured on its own touches, so a held-out customer's order counts for
    # the rule that held them out, whatever else they were sent. The tables make run prints
    # read these figures.
    groups = outcomes["groups"]
    assert again == outcomes
    ordered: defaultdict[str, list[datetime]] = defaultdict(list)
    for r in responses:
        ordered[r["customer_id"]].append(datetime.fromisoformat(r["occurred_at"]))
    expected: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for rule_id, arm, customer_id, touched_at in arms:
        if any(touched_at < at for at in ordered.get(customer_id, ())):
            expected[rule_id, arm].add(customer_id)
    got = {
        (g["key"], arm): g[arm]["conversions"]
        for g in groups
        for arm in ("treatment", "control")
        if g[arm]["conversions"]
    }
    assert len(responses) > 0 and got == {k: len(v) for k, v in expected.items()}
    # The win-back (15% off) is read against the customers it held out, not the forecast.
    winback = next(g for g in groups if g["key"] == "winback-churned")
    assert winback["baseline"] == "control_group", winback
    assert 0 < winback["control"]["customers"] < winback["treatment"]["customers"], winback
    measured = {PLAYBOOK_STRATEGY[g["key"]] for g in groups if g["key"] in PLAYBOOK_STRATEGY}
    assert measured == {"develop", "maintain", "nurture"}
    assert len(demo.outcome_lines(outcomes)) == len(groups) + 1
    assert sum(p["churned"] for p in flow["periods"]) > 0
    assert any("key" in line for line in demo.flow_lines(flow))
    # The quarter holding today is marked: its churn and revenue are so far, not a quarter's.
    last = flow["periods"][-1]
    assert [line for line in demo.flow_lines(flow) if "under way" in line] == [
        f"{last['start']} to {last['end']} (under way: so far):"
    ]
    for strategy, arms in acted.items():
        # Both arms are decided, the control one the smaller (20% of each rule's matches).
        assert 0 < arms["control"] < arms["treatment"], (strategy, arms)


async def _follow_ups_decided(stack: Stack, after: datetime) -> bool:
    """Whether a rule has decided anything since ``after`` (the simulated orders set off
    thanks and follow-ups of their own)."""
    async with stack.engine.connect() as conn:
        n = await conn.scalar(
            text("SELECT count(*) FROM outreach.actions WHERE decided_at > :at"), {"at": after}
        )
    return bool(n)


async def _playbooks_acted(stack: Stack) -> dict[str, dict[str, int]] | None:
    """Per strategy playbook, its actions that went (or would have gone) out, by arm — once
    every playbook has both arms; the rows carry the strategy they were decided for."""
    async with stack.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT rule_id, strategy, arm, count(*) AS n FROM outreach.actions "
                    "WHERE rule_id = ANY(CAST(:ids AS text[])) "
                    "AND status IN ('pending', 'sent', 'scheduled', 'control') "
                    "GROUP BY rule_id, strategy, arm"
                ),
                {"ids": list(PLAYBOOK_STRATEGY)},
            )
        ).all()
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        strategy = PLAYBOOK_STRATEGY[r.rule_id]
        assert r.strategy == strategy, r  # decided for that strategy's customers only
        arms = out.setdefault(strategy, {"control": 0, "treatment": 0})
        arms[r.arm] += r.n
    done = set(out) == {"develop", "maintain", "nurture"} and all(
        a["control"] and a["treatment"] for a in out.values()
    )
    return out if done else None


def _expected_apologies(events: list[dict[str, Any]]) -> int:
    """The default pack apologises by email for every high-severity complaint raised within
    two days of being recorded (the history's older ones are judged, not answered): it is
    transactional (no cap, no quiet hours, no marketing consent), but email needs consent."""
    recent = datetime.now(UTC) - timedelta(days=2)
    email_ok: dict[str, bool] = {}
    for e in events:
        if e["type"] == "customer":
            email_ok[e["customer_id"]] = e["consent"]["email"]
    return sum(
        1
        for e in events
        if e["type"] == "complaint"
        and e["status"] == "opened"
        and e["severity"] == "high"
        and datetime.fromisoformat(e["occurred_at"]) > recent
        and email_ok.get(e["customer_id"], False)
    )


async def _until_decided(stack: Stack, apologies: int) -> None:
    async def decided() -> bool:
        async with stack.engine.connect() as conn:
            n = await conn.scalar(
                # Those without consent are decided too (suppressed): count only the ones
                # going out, or a busy outreach is caught half-way through the complaints.
                text(
                    "SELECT count(*) FROM outreach.actions "
                    "WHERE kind = 'apology' AND status IN ('pending', 'sent')"
                )
            )
        return bool(n >= apologies)

    await until(decided, 120, "apologies decided")
