"""The story `make run` tells: a real order history through the whole pipeline.

    python deploy/local/demo.py      (after `make up`; `make run` does it for you)

It installs the default rule pack and a webhook channel to the local sink, replays the CDNOW
transaction log that ships inside the `lifetimes` package (2,357 customers, 6,919 orders,
1997–98) through ingest with its dates shifted so the history ends today — with generated
profiles (names, birthdays, time zones, consent) and a sprinkle of complaints and visits, all
seeded so every run is the same — then prints what Tend made of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from cli.replay import Progress, ReplayReport, post_events
from shared.pipeline_health import LAG_FRESH_SECONDS

SEED = 20_240_601
FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "John",
    "Margaret",
    "Ken",
    "Radia",
    "Tim",
    "Hedy",
    "Linus",
    "Katherine",
    "Dennis",
    "Sophie",
    "Yukihiro",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Backus",
    "Hamilton",
    "Thompson",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "Torvalds",
    "Johnson",
    "Ritchie",
    "Wilson",
    "Matsumoto",
]
ZONES = [
    "Europe/Paris",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Australia/Sydney",
    "America/Sao_Paulo",
    "Africa/Lagos",
]


def cdnow_sample() -> Path:
    import lifetimes

    return Path(lifetimes.__file__).parent / "datasets" / "CDNOW_sample.txt"


@dataclass(frozen=True)
class Purchase:
    customer_id: str
    order_id: str
    day: date
    amount: Decimal


def read_cdnow(path: Path) -> list[Purchase]:
    """CDNOW_sample.txt: customer id, customer index, date (YYYYMMDD), quantity, spend."""
    out = []
    for n, line in enumerate(path.read_text().splitlines()):
        parts = line.split()
        if len(parts) < 5:
            continue
        d = parts[2]
        out.append(
            Purchase(
                parts[0],
                f"cdnow-{n}",
                date(int(d[:4]), int(d[4:6]), int(d[6:])),
                Decimal(parts[4]).quantize(Decimal("0.01")),
            )
        )
    return out


def shifted(purchases: Sequence[Purchase], today: date) -> list[Purchase]:
    """The history moved so its last order is today."""
    delta = today - max(p.day for p in purchases)
    return [Purchase(p.customer_id, p.order_id, p.day + delta, p.amount) for p in purchases]


# How far back the care team's backlog of open complaints reaches in the demo's history.
COMPLAINT_BACKLOG_DAYS = 60


def demo_events(
    purchases: Sequence[Purchase], today: date, seed: int = SEED
) -> list[dict[str, Any]]:
    """Profiles, then every order, complaint and visit, in time order (seeded)."""
    rng = random.Random(seed)
    first_day: dict[str, date] = {}
    for p in purchases:
        first_day[p.customer_id] = min(first_day.get(p.customer_id, p.day), p.day)
    events: list[tuple[datetime, dict[str, Any]]] = []
    for cid in sorted(first_day, key=int):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        born = date(rng.randint(1950, 2004), rng.randint(1, 12), rng.randint(1, 28))
        at = datetime.combine(first_day[cid], time(8), UTC) - timedelta(days=1)
        events.append(
            (
                at,
                {
                    "type": "customer",
                    "customer_id": cid,
                    "occurred_at": at.isoformat(),
                    "name": name,
                    "email": f"{name.lower().replace(' ', '.')}.{cid}@example.com",
                    "birthday": born.isoformat(),
                    "timezone": rng.choice(ZONES),
                    "locale": "en-US",
                    "consent": {
                        "email": rng.random() < 0.85,
                        "sms": rng.random() < 0.3,
                        "marketing": rng.random() < 0.7,
                    },
                    "tags": ["vip"] if rng.random() < 0.05 else [],
                },
            )
        )
    now = datetime.now(UTC)
    for p in purchases:
        at = datetime.combine(p.day, time(rng.randint(9, 20), rng.randint(0, 59)), UTC)
        if p.day >= today:
            # The last day's orders have happened already: at its start, so the same event
            # on a later run (same id, same moment) is a duplicate, not a conflict.
            at = datetime.combine(p.day, time(0), UTC)
        events.append(
            (
                at,
                {
                    "type": "order",
                    "order_id": p.order_id,
                    "customer_id": p.customer_id,
                    "occurred_at": at.isoformat(),
                    "status": "paid",
                    "amount": str(p.amount),
                    "currency": "USD",
                },
            )
        )
        if rng.random() < 0.12:
            seen = at - timedelta(hours=rng.randint(1, 48))
            events.append(
                (
                    seen,
                    {
                        "type": "visit",
                        "visit_id": f"v-{p.order_id}",
                        "customer_id": p.customer_id,
                        "occurred_at": seen.isoformat(),
                        "channel": rng.choice(["web", "app", "store"]),
                    },
                )
            )
        if rng.random() < 0.02:
            opened = at + timedelta(days=rng.randint(1, 5))
            if opened.date() <= today:
                severity = rng.choice(["low", "medium", "high"])
                complaint = {
                    "complaint_id": f"k-{p.order_id}",
                    "customer_id": p.customer_id,
                    "severity": severity,
                    "category": "delivery",
                    "order_id": p.order_id,
                }
                events.append(
                    (
                        opened,
                        {
                            "type": "complaint",
                            **complaint,
                            "status": "opened",
                            "occurred_at": opened.isoformat(),
                            "text": "The parcel arrived late.",
                        },
                    )
                )
                resolved = opened + timedelta(days=rng.randint(1, 10))
                # The care team answers within days: of the last two months' complaints, about
                # three in ten are still open (a few past their tier's target); every older
                # one was resolved. (A complaint open for good would hold a customer's
                # promotions for good.)
                if resolved.date() < today and (
                    rng.random() < 0.7
                    or opened.date() < today - timedelta(days=COMPLAINT_BACKLOG_DAYS)
                ):
                    events.append(
                        (
                            resolved,
                            {
                                "type": "complaint",
                                **complaint,
                                "status": "resolved",
                                "occurred_at": resolved.isoformat(),
                            },
                        )
                    )
    events.sort(key=lambda item: item[0])
    return [e for at, e in events if at <= now]


# The simulated weeks after the history: each customer the rules touched (a team alert
# through the call it asked the shop's people for) orders once with the chance the model
# forecast for them when the action was decided (its `baseline`; this when there is none), and
# a little more often when the message was sent than when it was held out (the control arm).
SIMULATED_CHANCE = 0.10
SIMULATED_LIFT = 0.04
# The weeks after as simulated on the demo's database (their instant and their orders): a
# later run posts the same orders again and reads the outcomes as they stood then.
SIMULATED = Path(".tend/demo-simulated.json")


@dataclass(frozen=True)
class Touch:
    """A customer an action reached (``treatment``: sent) or would have (``control``) at
    ``at``, with the model's forecast of its goal when decided."""

    customer_id: str
    arm: str
    baseline: float | None
    at: datetime


def simulated_responses(
    touches: Sequence[Touch], now: datetime, seed: int = SEED
) -> list[dict[str, Any]]:
    """SIMULATED orders standing in for the weeks after the history, placed at ``now``, after
    every touch: each touched customer orders with the chance the model forecast
    (``SIMULATED_CHANCE`` without a forecast), as their first touch has it, plus
    ``SIMULATED_LIFT`` when that message was sent. Each draw is seeded by the customer."""
    first: dict[str, Touch] = {}
    for t in sorted(touches, key=lambda t: t.at):
        first.setdefault(t.customer_id, t)
    out = []
    for cid in sorted(first):
        touch = first[cid]
        rng = random.Random(f"{seed}:{cid}")
        chance = SIMULATED_CHANCE if touch.baseline is None else touch.baseline
        if touch.arm == "treatment":
            chance += SIMULATED_LIFT
        draw, amount = rng.random(), Decimal(rng.randint(1500, 9000)) / 100
        if draw < chance:
            out.append(
                {
                    "type": "order",
                    "order_id": f"simulated-{cid}",
                    "customer_id": cid,
                    "occurred_at": now.isoformat(),
                    "status": "paid",
                    "amount": str(amount),
                    "currency": "USD",
                }
            )
    return out


def simulated_before() -> tuple[datetime, list[dict[str, Any]]] | None:
    """The weeks after as an earlier run simulated them on the demo's database, if one did."""
    if not SIMULATED.exists():
        return None
    kept = json.loads(SIMULATED.read_text())
    return datetime.fromisoformat(kept["at"]), kept["orders"]


def keep_simulated(at: datetime, orders: Sequence[dict[str, Any]]) -> None:
    SIMULATED.write_text(json.dumps({"at": at.isoformat(), "orders": list(orders)}))


async def touched(outreach: httpx.AsyncClient, ops_key: str, now: datetime) -> list[Touch]:
    """Every customer an action was sent to, or held out from, by ``now``."""
    headers = {"Authorization": f"Bearer {ops_key}"}
    out: list[Touch] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"status": ["sent", "control"], "limit": 500}
        if cursor:
            params["cursor"] = cursor
        page = (await outreach.get("/v1/actions", params=params, headers=headers)).json()
        for row in page["items"]:
            if row["status"] == "control":
                at = datetime.fromisoformat(row["not_before"] or row["decided_at"])
                if at <= now:
                    out.append(Touch(row["customer_id"], "control", row.get("baseline"), at))
            else:
                at = datetime.fromisoformat(row["sent_at"] or row["decided_at"])
                out.append(Touch(row["customer_id"], "treatment", row.get("baseline"), at))
        cursor = page["next_cursor"]
        if not cursor:
            return out


def _rate(arm: dict[str, Any]) -> str:
    if not arm["customers"]:
        return "-"
    return f"{arm['conversions']}/{arm['customers']} = {arm['conversion_rate']:.0%}"


def outcome_lines(report: dict[str, Any]) -> list[str]:
    """The outcomes table: per group, each arm's conversions, the difference against its
    baseline with its 95% interval, and the verdict."""
    lines = [
        f"{'':<26} {'treated':>16} {'baseline':>26} {'difference (95%)':>24}  verdict",
    ]
    for g in report["groups"]:
        t = g["treatment"]
        if g["baseline"] == "control_group":
            base = "control " + _rate(g["control"])
        elif g["baseline"] == "model_forecast" and g["forecast_rate"] is not None:
            base = f"forecast {g['forecast_rate']:.0%}"
        else:
            base = "none"
        d = g["conversion_difference"]
        diff = f"{d['estimate']:+.1%} [{d['low']:+.1%}, {d['high']:+.1%}]" if d else "-"
        verdict = g["verdict"] + (" (small sample)" if g["small_sample"] else "")
        lines.append(f"{g['key']!s:<26} {_rate(t):>16} {base:>26} {diff:>24}  {verdict}")
    return lines


def _money(amount: str) -> str:
    return f"${Decimal(amount):,.0f}"


def flow_lines(flow: dict[str, Any], periods: int = 4) -> list[str]:
    """The last ``periods`` periods of the flow, each in total and per tier: customers gained,
    won back and lost, and the money in and out."""
    lines = []
    for p in flow["periods"][-periods:]:
        so_far = " (under way: so far)" if p.get("under_way") else ""
        lines.append(f"{p['start']} to {p['end']}{so_far}:")
        for tier, f in [("all", p), *p["by_tier"].items()]:
            rate = f"{f['churn_rate']:.0%}" if f["churn_rate"] is not None else "-"
            lines.append(
                f"  {tier:<8} active {f['active_at_start']:>5,} -> {f['active_at_end']:>5,}; "
                f"+{f['new']} new, +{f['reactivated']} back, -{f['churned']} lost "
                f"(churn {rate}); revenue {_money(f['revenue_new'])} new, "
                f"{_money(f['revenue_returning'])} returning; lost with churn "
                f"{_money(f['revenue_lost'])} a year"
            )
    return lines


@dataclass
class Summary:
    overview: dict[str, Any]
    actions: dict[str, Any]
    rules: dict[str, Any]

    def lines(self) -> list[str]:
        o, a = self.overview, self.actions
        share = o.get("top20_revenue_share")
        out = [
            f"Customers: {o['customers']:,} ({o['buyers']:,} buyers), lifetime revenue "
            f"${Decimal(o['lifetime_revenue']):,.2f}; the top 20% of buyers hold "
            f"{share:.0%} of it."
            if share is not None
            else "",
            "By stage: " + ", ".join(f"{k} {v}" for k, v in o["by_stage"].items() if v),
            "By tier:  " + ", ".join(f"{k} {v}" for k, v in o["by_tier"].items() if v),
        ]
        sent = Counter[str]()
        waiting = Counter[str]()
        held = Counter[str]()
        control = 0
        for row in a["rows"]:
            if row["status"] == "control":
                control += row["count"]
            elif row["status"] in ("sent", "pending"):
                sent[row["kind"]] += row["count"]
            elif row["status"] in ("scheduled", "held"):
                waiting[f"{row['kind']} ({row['status']})"] += row["count"]
            elif row["status"] == "suppressed":
                held[row["reason"] or "unknown"] += row["count"]
        out.append(
            "Actions sent (or sending) by kind: "
            + (", ".join(f"{k} {v}" for k, v in sent.most_common()) or "none yet")
        )
        if waiting:
            out.append("Waiting: " + ", ".join(f"{k} {v}" for k, v in waiting.most_common()))
        if control:
            out.append(f"Held out as control groups (decided, never sent): {control}")
        out.append(
            "Held back by the policy: "
            + (", ".join(f"{k} {v}" for k, v in held.most_common()) or "none")
        )
        in_line = {
            r["rule"]["id"]: r["waiting_for_a_slot"]
            for r in self.rules.get("items", [])
            if r["waiting_for_a_slot"]
        }
        if in_line:
            out.append(
                "In line for a rule's next daily slots: "
                + ", ".join(f"{k} {v}" for k, v in sorted(in_line.items()))
            )
        return [line for line in out if line]


async def fetch_summary(
    scoring: httpx.AsyncClient, outreach: httpx.AsyncClient, ops_key: str
) -> Summary:
    headers = {"Authorization": f"Bearer {ops_key}"}
    overview = (await scoring.get("/v1/stats/overview", headers=headers)).json()
    actions = (await outreach.get("/v1/actions/summary", headers=headers)).json()
    rules = (await outreach.get("/v1/rules", headers=headers)).json()
    return Summary(overview, actions, rules)


def expected_totals(events: Sequence[dict[str, Any]]) -> tuple[int, Decimal]:
    """Customers and revenue in ``events`` (every order here is paid, none refunded)."""
    orders = [e for e in events if e["type"] == "order"]
    return len({e["customer_id"] for e in events}), sum(
        (Decimal(e["amount"]) for e in orders), Decimal(0)
    )


async def wait_scored(
    scoring: httpx.AsyncClient, ops_key: str, customers: int, revenue: Decimal, timeout: float = 300
) -> None:
    """Until scoring holds every customer and every dollar (so every order is applied)."""
    headers = {"Authorization": f"Bearer {ops_key}"}
    progress = Progress(customers, "scoring       ")
    deadline = asyncio.get_running_loop().time() + timeout
    shown = 0
    while asyncio.get_running_loop().time() < deadline:
        o = (await scoring.get("/v1/stats/overview", headers=headers)).json()
        done = min(o["customers"], customers)
        if done > shown:
            progress(done - shown)
            shown = done
        if o["customers"] >= customers and Decimal(o["lifetime_revenue"]) >= revenue:
            if shown < customers:
                progress(customers - shown)
            return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"scoring had not applied the whole history after {timeout:.0f} s")


async def wait_outreach_caught_up(
    scoring: httpx.AsyncClient, outreach: httpx.AsyncClient, ops_key: str, timeout: float = 180
) -> None:
    """Until every change scoring has written is published and outreach has applied it (its
    replica of the cards, which broadcasts and schedules read, is whole): scoring's outbox
    and forwards empty, then outreach's consumer lag 0 as read after that (a lag figure is
    up to LAG_FRESH_SECONDS old)."""
    headers = {"Authorization": f"Bearer {ops_key}"}
    clock = asyncio.get_running_loop().time
    deadline = clock() + timeout
    emptied: float | None = None
    while clock() < deadline:
        health = (await scoring.get("/v1/ops/health", headers=headers)).json()
        if health["outbox"]["rows"] or health["forwards"]["rows"]:
            emptied = None
        elif emptied is None:
            emptied = clock()
        elif clock() - emptied > LAG_FRESH_SECONDS:
            lag = (await outreach.get("/v1/ops/health", headers=headers)).json()["consumer"]
            if lag["total"] == 0:
                return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"outreach had not applied scoring's changes after {timeout:.0f} s")


async def launch_broadcasts(outreach: httpx.AsyncClient, marketing_key: str) -> None:
    """Marketing announces the new collection to its champions and loyal customers, and
    thanks its maintain customers (the maintain playbook's note)."""
    headers = {"Authorization": f"Bearer {marketing_key}"}
    for rule_id, launch_id in (
        ("new-arrivals", "demo-new-arrivals"),
        ("maintain-thank-you-note", "demo-thank-you"),
    ):
        resp = await outreach.post(
            "/v1/broadcasts", json={"rule_id": rule_id, "launch_id": launch_id}, headers=headers
        )
        resp.raise_for_status()


async def setup_outreach(
    outreach: httpx.AsyncClient, marketing_key: str, sink_url: str, sink_secret: str
) -> None:
    headers = {"Authorization": f"Bearer {marketing_key}"}
    resp = await outreach.post("/v1/rule-packs/default", headers=headers)
    resp.raise_for_status()
    for channel_id, kind, url in (
        ("local-sink", "webhook", f"{sink_url}/webhook"),
        ("local-sms", "sms", f"{sink_url}/sms"),
    ):
        channel = {"id": channel_id, "kind": kind, "config": {"url": url}, "secret": sink_secret}
        resp = await outreach.post("/v1/channels", json=channel, headers=headers)
        if resp.status_code == 409:
            resp = await outreach.put(
                f"/v1/channels/{channel_id}",
                headers=headers,
                json={"config": {"url": url}, "secret": sink_secret, "enabled": True},
            )
        resp.raise_for_status()


def demo_day() -> date:
    """The day the demo's history ends: the day it was first loaded (``TEND_DEMO_DAY``, kept
    by ``make run`` in the state folder), so a later run posts the very same events and finds
    them all already there; today when not given."""
    given = os.environ.get("TEND_DEMO_DAY")
    return date.fromisoformat(given) if given else datetime.now(UTC).date()


async def main(keys: dict[str, str], sink_secret: str) -> int:
    urls = {
        s: f"http://127.0.0.1:{os.environ.get(f'TEND_{s.upper()}_PORT', p)}"
        for s, p in (("ingest", 8001), ("scoring", 8002), ("outreach", 8003))
    }
    sinks = f"http://127.0.0.1:{os.environ.get('TEND_SINKS_PORT', 8004)}"
    today = demo_day()
    purchases = shifted(read_cdnow(cdnow_sample()), today)
    events = demo_events(purchases, today)
    async with (
        httpx.AsyncClient(
            base_url=urls["ingest"],
            timeout=60,
            headers={"Authorization": f"Bearer {keys['TEND_INGEST_KEY']}"},
        ) as ingest,
        httpx.AsyncClient(base_url=urls["scoring"], timeout=120) as scoring,
        httpx.AsyncClient(base_url=urls["outreach"], timeout=120) as outreach,
    ):
        await setup_outreach(outreach, keys["TEND_MARKETING_KEY"], sinks, sink_secret)
        report = ReplayReport()
        await post_events(
            ingest,
            list(enumerate(events, start=1)),
            report,
            progress=Progress(len(events), "replaying CDNOW"),
        )
        print(
            f"accepted {report.accepted:,} events ({report.duplicates:,} already there, "
            f"{report.rejected} rejected)"
        )
        for bad in report.bad[:5]:
            print(f"  event {bad.line} rejected: {bad.reason}")
        if report.rejected > 5:
            print(f"  ... and {report.rejected - 5} more")
        customers, revenue = expected_totals(events)
        await wait_scored(scoring, keys["TEND_OPS_KEY"], customers, revenue)
        ops = {"Authorization": f"Bearer {keys['TEND_OPS_KEY']}"}
        (await scoring.post("/v1/ops/refit", headers=ops)).raise_for_status()
        (await scoring.post("/v1/ops/sweep", headers=ops)).raise_for_status()
        # The refreshed cards travel to outreach: the tick and the broadcasts read them.
        await wait_outreach_caught_up(scoring, outreach, keys["TEND_OPS_KEY"])
        (await outreach.post("/v1/ops/tick", headers=ops)).raise_for_status()
        await launch_broadcasts(outreach, keys["TEND_MARKETING_KEY"])
        await asyncio.sleep(3)  # delivery to the sinks
        summary = await fetch_summary(scoring, outreach, keys["TEND_OPS_KEY"])
        # The history ends today: SIMULATE the weeks after, so the outcomes have conversions.
        # Simulated once per database: a later run posts the same orders again (taken as
        # duplicates) and reads the outcomes as they stood then. A history loaded afresh is a
        # database afresh.
        before = None if report.accepted else await asyncio.to_thread(simulated_before)
        if before is None:
            simulated_at = datetime.now(UTC)
            touches = await touched(outreach, keys["TEND_OPS_KEY"], simulated_at)
            responses = simulated_responses(touches, simulated_at)
            await asyncio.to_thread(keep_simulated, simulated_at, responses)
        else:
            simulated_at, responses = before
        simulated = ReplayReport()
        await post_events(ingest, list(enumerate(responses, start=1)), simulated)
        revenue += sum((Decimal(e["amount"]) for e in responses), Decimal(0))
        await wait_scored(scoring, keys["TEND_OPS_KEY"], customers, revenue)
        await asyncio.sleep(3)  # the orders travel to outreach as changes
        # As they stood once the simulated orders came: what those orders set off (a
        # follow-up of each) has no weeks after yet.
        as_of = {"as_of": simulated_at.isoformat()}
        outcomes = {
            by: (await outreach.get("/v1/outcomes", params={"by": by, **as_of}, headers=ops)).json()
            for by in ("rule", "strategy")
        }
        flow = (
            await scoring.get("/v1/stats/flow", params={"period": "quarter"}, headers=ops)
        ).json()
        some = (
            await scoring.get("/v1/customers", params={"sort": "clv", "limit": 1}, headers=ops)
        ).json()["items"]
    print("\n== What Tend made of it ==")
    for line in summary.lines():
        print("  " + line)
    print(
        f"\n== What acting achieved (SIMULATED weeks after, {simulated_at:%Y-%m-%d %H:%M} UTC: "
        f"{len(responses):,} orders; each customer touched by then orders with the chance "
        f"the model forecast for them ({SIMULATED_CHANCE:.0%} without a forecast), "
        f"{SIMULATED_LIFT:.0%} more if the message was sent; simulated once per database) =="
    )
    for by, report in outcomes.items():
        print(f"  by {by}:")
        for line in outcome_lines(report):
            print("    " + line)
    caveat = (
        f"A sent message adds {SIMULATED_LIFT * 100:.0f} points here by construction. A row read "
        "against the model's forecast compares with the chance of an order within its own goal's "
        "window, which this simulation does not follow (each customer draws once, with their "
        "first touch's chance): it can read more or less than that, the weaker evidence a "
        "forecast is. A control group's row is the one to trust."
    )
    for line in textwrap.wrap(caveat, 96):
        print("  " + line)
    print("\n== The leaky bucket, per quarter (event time) ==")
    for line in flow_lines(flow):
        print("  " + line)
    print("\n== Look ==")
    for name, url in urls.items():
        print(f"  {name:<9} {url}/docs")
    if some:
        print(
            f"  a card    curl -H 'Authorization: Bearer $TEND_OPS_KEY' "
            f"{urls['scoring']}/v1/customers/{some[0]['customer_id']}"
        )
    print(
        f"  actions   curl -H 'Authorization: Bearer $TEND_OPS_KEY' {urls['outreach']}/v1/actions"
    )
    print(f"  sinks     {sinks}/  (webhooks, SMS and email received)")
    return 0


if __name__ == "__main__":
    dev_keys = dict(line.split("=", 1) for line in Path(".tend/dev-keys.env").read_text().split())
    sys.exit(asyncio.run(main(dev_keys, Path(".tend/sink-secret").read_text().strip())))
