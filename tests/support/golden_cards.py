"""Golden cards: fixed, seeded customer histories scored the way the consumer scores them, and
the exact card bytes every event gave, recorded once and compared on every run.

The histories cover what the property tests of ``tests/unit/test_state.py`` compare (orders
through every status, refunds, cancellations, complaints, visits, profile writes, opt-outs,
rule tags) and the shapes the consumer meets at volume: purchases arriving in order, late and
out-of-order events, events dated after the consumer's clock, duplicates, long silences that
walk a customer through declining, churned and reactivated, merges, and a heavy buyer. Each
event is applied and scored as :class:`services.scoring.shell.consumer.EventApplier` does:
the state carried on from the previous event (with the caches it keeps), sometimes read back
from its stored JSON instead (another batch, another instance), a merge folded in with
:func:`services.scoring.core.merge.fold`, complaints held to the tier of the card scored.

``python -m tests.support.golden_cards`` rewrites the recording (only when a card is meant to
change: the recorded file is the previous release's cards).
"""

from __future__ import annotations

import lzma
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from services.scoring.core.card import Population, score
from services.scoring.core.merge import fold
from services.scoring.core.predict import BgNbdParams, GammaGammaParams
from services.scoring.core.rfm import RfmBreakpoints
from services.scoring.core.state import DAY_US, CustomerState, apply
from services.scoring.core.tiers import TierBreakpoints
from services.scoring.settings import MembershipTier, ScoringSettings
from shared.events import Envelope, MergeData

RECORDING = Path(__file__).resolve().parent.parent / "golden" / "cards.xz"
T0 = datetime(2024, 1, 1, tzinfo=UTC)

# Two configurations: everything a card can show (a fitted population, membership tiers),
# and a fresh deployment's (no population yet, default settings).
FULL_SETTINGS = ScoringSettings(
    membership_tiers=(
        MembershipTier(name="silver", min_spend_365d=Decimal(300)),
        MembershipTier(name="gold", min_spend_365d=Decimal(1500), min_orders_365d=6),
    )
)
FULL_POPULATION = Population(
    rfm=RfmBreakpoints(
        recency_days=(20.0, 60.0, 150.0, 300.0),
        frequency=(1.0, 2.0, 4.0, 7.0),
        monetary=(60.0, 180.0, 450.0, 1200.0),
    ),
    tiers=TierBreakpoints(low_cut=4.0, key_cut=7.0, composite_median=5.5, clv_median=300.0),
    bg=BgNbdParams(r=0.24, alpha=4.41, a=0.79, b=2.43),
    gg=GammaGammaParams(p=6.25, q=3.74, v=15.45),
    median_gap_days=41.5,
)
BARE_SETTINGS = ScoringSettings()
BARE_POPULATION = Population()

CUSTOMERS = 420
SEED = 19


@dataclass(frozen=True, slots=True)
class Step:
    """One event as the consumer meets it: applied at ``now`` (its clock), to the state read
    back from storage first when ``reload``."""

    envelope: Envelope
    now: datetime
    reload: bool


class _History:
    """Builds one customer's (or a merge's) steps from a seeded generator."""

    def __init__(self, rng: random.Random, cid: str) -> None:
        self.rng = rng
        self.cid = cid
        self.n = 0
        self.events: list[tuple[datetime, Envelope]] = []  # (arrival, event)

    def add(
        self,
        event_type: str,
        at: datetime,
        data: dict[str, Any],
        *,
        arrival: datetime | None = None,
        cid: str | None = None,
    ) -> Envelope:
        self.n += 1
        who = cid or self.cid
        envelope = Envelope.model_validate(
            {
                "event_id": f"{who}-e{self.n}",
                "event_type": event_type,
                "customer_id": who,
                "occurred_at": at,
                "received_at": at,
                "source": "golden",
                "data": data,
            }
        )
        if arrival is None:
            arrival = at + timedelta(seconds=self.rng.randint(1, 3 * 3600))
        self.events.append((arrival, envelope))
        return envelope

    def money(self, low: int = 5, high: int = 400) -> str:
        rng = self.rng
        cents = rng.randint(low * 100, high * 100)
        shape = rng.random()
        if shape < 0.1:
            return str(cents // 100)  # a whole amount: "70"
        if shape < 0.15:
            return f"{cents / 100:.1f}"  # one place: "9.5"
        return f"{cents // 100}.{cents % 100:02d}"

    def items(self) -> list[dict[str, Any]]:
        rng = self.rng
        out: list[dict[str, Any]] = []
        for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
            item: dict[str, Any] = {
                "sku": rng.choice(("s-1", "s-2", "s-3", "s-4")),
                "quantity": rng.randint(1, 3),
                "unit_price": self.money(1, 80),
            }
            if rng.random() < 0.8:
                item["category"] = rng.choice(("tea", "cups", "books", "pots"))
            if rng.random() < 0.6:
                item["brand"] = rng.choice(("acme", "zen", "kyo"))
            out.append(item)
        return out

    def order(
        self,
        status: str,
        order_id: str,
        amount: str,
        at: datetime,
        *,
        arrival: datetime | None = None,
        cid: str | None = None,
        **more: Any,
    ) -> Envelope:
        data = {"order_id": order_id, "status": status, "amount": amount, "currency": "EUR"}
        return self.add(f"order.{status}", at, {**data, **more}, arrival=arrival, cid=cid)

    def purchase(self, order_id: str, at: datetime, *, late: bool = False) -> None:
        """An order placed (sometimes) and paid; ``late``: some of its events arrive days on."""
        rng = self.rng
        total = self.money()
        delay = timedelta(days=rng.randint(1, 40)) if late else None
        shape = rng.random()
        if shape < 0.55:
            self.order("paid", order_id, total, at, items=self.items(), arrival=_on(at, delay))
        else:
            owed = self.money(0, 50) if rng.random() < 0.3 else "0"
            self.order(
                "placed",
                order_id,
                total,
                at,
                items=self.items(),
                outstanding=owed,
                arrival=_on(at, delay),
            )
            if shape < 0.9:
                paid_at = at + timedelta(hours=rng.randint(-2, 30))
                self.order("paid", order_id, total, paid_at, items=self.items())
        if rng.random() < 0.12:
            refund_at = at + timedelta(days=rng.randint(0, 60))
            self.order("refunded", order_id, self.money(1, 120), refund_at, arrival=_on(at, delay))
        if rng.random() < 0.05:
            self.order("cancelled", order_id, total, at + timedelta(days=rng.randint(0, 5)))

    def profile(self, at: datetime, **fields: Any) -> None:
        self.add("customer.updated", at, fields)

    def side_events(self, start: datetime, span_days: int) -> None:
        """Complaints, visits, profile writes, an opt-out and rule tags over the span."""
        rng = self.rng

        def moment() -> datetime:
            return start + timedelta(seconds=rng.randint(0, span_days * 86_400))

        if rng.random() < 0.35:
            for k in range(rng.randint(1, 2)):
                opened = moment()
                severity = rng.choice(("low", "medium", "high"))
                self.add(
                    "complaint.opened",
                    opened,
                    {
                        "complaint_id": f"{self.cid}-k{k}",
                        "status": "opened",
                        "severity": severity,
                        "category": rng.choice(("delivery", "quality", None)),
                    },
                )
                if rng.random() < 0.6:
                    self.add(
                        "complaint.resolved",
                        opened + timedelta(hours=rng.randint(1, 200)),
                        {"complaint_id": f"{self.cid}-k{k}", "status": "resolved"},
                    )
        if rng.random() < 0.6:
            base = moment()
            for _ in range(rng.randint(1, 8)):
                at = base + timedelta(seconds=rng.randint(0, 80 * 86_400))
                visit = {"visit_id": f"v-{rng.randint(0, 5)}", "channel": "web"}
                self.add("visit.recorded", at, visit)
        for _ in range(rng.randint(0, 3)):
            fields: dict[str, Any] = {}
            if rng.random() < 0.6:
                fields["name"] = rng.choice(("Ann", "Bob", "Cy", "Dee"))
            if rng.random() < 0.5:
                fields["email"] = rng.choice((f"{self.cid}@x.io", None))
            if rng.random() < 0.4:
                fields["consent"] = {"email": rng.random() < 0.7, "marketing": rng.random() < 0.5}
            if rng.random() < 0.3:
                fields["tags"] = rng.sample(["vip", "b2b", "press"], rng.randint(0, 2))
            if rng.random() < 0.15:
                fields["member_tier"] = rng.choice(("club", None))
            if rng.random() < 0.2:
                fields["timezone"] = "Europe/Paris"
            self.profile(moment(), **fields)
        if rng.random() < 0.15:
            at = moment()
            self.add("customer.unsubscribed", at, {"how": "link"})
            if rng.random() < 0.5:
                self.add("customer.resubscribed", at + timedelta(days=3), {"how": "operator"})
        if rng.random() < 0.15:
            at = moment()
            self.add("customer.tagged", at, {"add": ["recalled"], "rule_id": "r-1"})
            if rng.random() < 0.5:
                self.add(
                    "customer.tagged",
                    at + timedelta(days=9),
                    {"remove": ["recalled"], "rule_id": "r-1"},
                )

    def steps(self, reload_share: float = 0.2) -> list[Step]:
        """The events in arrival order, each with the consumer's clock at its arrival."""
        rng = self.rng
        ordered = sorted(self.events, key=lambda e: (e[0], e[1].event_id))
        return [Step(e, arrival, rng.random() < reload_share) for arrival, e in ordered]


def _on(at: datetime, delay: timedelta | None) -> datetime | None:
    return None if delay is None else at + delay


def _steady(h: _History, orders: int, *, late_share: float = 0.0) -> None:
    """A buyer on a rhythm of their own, purchases in order (``late_share`` of them late)."""
    rng = h.rng
    start = T0 + timedelta(days=rng.randint(0, 200), seconds=rng.randint(0, 86_399))
    rhythm = rng.choice((3, 7, 14, 30, 45, 90))
    h.profile(start - timedelta(days=1), name=rng.choice(("Ann", "Bob")), email=f"{h.cid}@x.io")
    at = start
    for i in range(orders):
        h.purchase(f"{h.cid}-o{i}", at, late=rng.random() < late_share)
        jitter = rng.uniform(0.3, 1.8) if rng.random() < 0.9 else rng.uniform(3, 8)
        at += timedelta(days=rhythm * jitter, seconds=rng.randint(0, 40_000))
    h.side_events(start, int((at - start).days) + 1)


def _lapsing(h: _History) -> None:
    """Long silences: declining, churned, bought again (reactivated), silent again."""
    rng = h.rng
    at = T0 + timedelta(days=rng.randint(0, 60))
    for i in range(rng.randint(3, 9)):
        h.purchase(f"{h.cid}-o{i}", at)
        gap = rng.choice((5, 12, 30, 70, 150, 240, 400))
        at += timedelta(days=gap, hours=rng.randint(0, 23))
    # A visit long after the last purchase: a card scored when time alone has moved the stage.
    h.add("visit.recorded", at, {"visit_id": "v-late", "channel": "app"})


def _scrambled(h: _History) -> None:
    """The property tests' kind of history: every kind of fact, arriving in any order, with
    duplicates, events dated after the clock, and offsets other than UTC."""
    rng = h.rng
    for i in range(rng.randint(0, 7)):
        oid = f"{h.cid}-o{i}"
        total = h.money(1, 999)
        at = T0 + timedelta(seconds=rng.randint(0, 700 * 86_400))
        if rng.random() < 0.5:
            h.order("placed", oid, total, at, outstanding=h.money(0, 99), items=h.items())
        if rng.random() < 0.6:
            h.order("paid", oid, total, at + timedelta(hours=rng.randint(-3, 48)), items=h.items())
        for _ in range(rng.randint(0, 2)):
            h.order("refunded", oid, h.money(1, 999), at + timedelta(days=rng.randint(-5, 90)))
        if rng.random() < 0.2:
            h.order("cancelled", oid, total, at + timedelta(days=rng.randint(0, 30)))
    h.side_events(T0, 700)
    paris = timezone(timedelta(hours=2))
    arrivals: list[tuple[datetime, Envelope]] = []
    clock = T0 + timedelta(days=rng.randint(-20, 100))
    events = [e for _, e in h.events]
    rng.shuffle(events)
    events += rng.sample(events, min(len(events), rng.randint(0, 3)))  # duplicates
    for e in events:
        clock += timedelta(days=rng.randint(0, 90), seconds=rng.randint(0, 86_399))
        if rng.random() < 0.2:
            e = e.model_copy(update={"occurred_at": e.occurred_at.astimezone(paris)})
        arrivals.append((clock, e))
    h.events = arrivals


def _heavy(h: _History, orders: int) -> None:
    rng = h.rng
    at = T0 + timedelta(seconds=rng.randint(0, 86_399))
    for i in range(orders):
        h.purchase(f"{h.cid}-o{i}", at, late=rng.random() < 0.03)
        at += timedelta(hours=rng.randint(6, 120))
    h.side_events(T0, (at - T0).days + 1)


def _merge(h: _History, other: str) -> None:
    """Two records of one person, each buying, then merged into ``h.cid``, then buying on."""
    rng = h.rng
    start = T0 + timedelta(days=rng.randint(0, 100))
    at = start
    for i in range(rng.randint(2, 6)):
        who = h.cid if rng.random() < 0.5 else other
        h.order("paid", f"o-{who}-{i}", h.money(), at, cid=who, items=h.items())
        if rng.random() < 0.3:
            h.add("visit.recorded", at, {"visit_id": f"v-{i}", "channel": "web"}, cid=who)
        at += timedelta(days=rng.randint(2, 40))
    h.add("customer.updated", start, {"name": "Ann", "consent": {"email": True}}, cid=other)
    h.add("customer.updated", start, {"consent": {"email": False, "sms": True}})
    at += timedelta(days=1)
    merge = {"merged_ids": [other], "reason": "same email", "actor": "golden"}
    h.add("customer.merged", at, merge, arrival=at + timedelta(minutes=1))
    for i in range(rng.randint(1, 4)):
        at += timedelta(days=rng.randint(1, 30))
        h.purchase(f"{h.cid}-after-{i}", at)


def histories(customers: int = CUSTOMERS, seed: int = SEED) -> Iterator[tuple[str, list[Step]]]:
    """``(configuration, steps)`` for each history of the recording, in a fixed order."""
    for n in range(customers):
        rng = random.Random(f"{seed}-{n}")
        h = _History(rng, f"g{n}")
        kind = n % 10
        if kind in (0, 1, 2):
            _steady(h, 10)
        elif kind == 3:
            _steady(h, rng.randint(4, 16), late_share=0.3)
        elif kind == 4:
            _steady(h, rng.randint(1, 25))
        elif kind == 5:
            _lapsing(h)
        elif kind in (6, 7):
            _scrambled(h)
        elif kind == 8:
            _merge(h, f"g{n}-alias")
        else:
            _steady(h, rng.randint(2, 12), late_share=0.6)
        config = "bare" if n % 4 == 3 else "full"
        yield config, h.steps()
    rng = random.Random(f"{seed}-heavy")
    heavy = _History(rng, "heavy")
    _heavy(heavy, 200)
    yield "full", heavy.steps(reload_share=0.02)
    yield "full", _cdnow_sample()


def _cdnow_sample() -> list[Step]:
    """The CDNOW sample the parity test replays (``lifetimes``' own), its orders in time
    order as one stream, each scored an hour after it: every third customer (the whole
    sample's cards would pass the recording's 1 MB for no new shape)."""
    import lifetimes

    sample = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_sample.txt"
    rows = [line.split() for line in sample.read_text().splitlines() if line.strip()]
    rows = [row for row in rows if int(row[0]) % 3 == 0]
    orders = sorted(enumerate(rows), key=lambda r: (r[1][2], r[0]))
    steps: list[Step] = []
    for n, (customer, _, day, _, spend) in orders:
        at = datetime(int(day[:4]), int(day[4:6]), int(day[6:]), 12, tzinfo=UTC)
        data = {
            "order_id": f"o-{n}",
            "status": "paid",
            "amount": f"{Decimal(spend):.2f}",
            "currency": "USD",
        }
        envelope = Envelope.model_validate(
            {
                "event_id": f"cdnow-{n}",
                "event_type": "order.paid",
                "customer_id": f"cdnow-{customer}",
                "occurred_at": at,
                "received_at": at,
                "source": "golden",
                "data": data,
            }
        )
        steps.append(Step(envelope, at + timedelta(hours=1), False))
    return steps


def replay(config: str, steps: list[Step]) -> Iterator[tuple[str, bytes]]:
    """``(event_id, card JSON)`` for each step, scored as the consumer scores it."""
    settings = FULL_SETTINGS if config == "full" else BARE_SETTINGS
    population = FULL_POPULATION if config == "full" else BARE_POPULATION
    retention = settings.visit_retention_days * DAY_US
    states: dict[str, CustomerState] = {}
    for step in steps:
        envelope = step.envelope
        cid = envelope.customer_id
        state = states.get(cid)
        if state is not None and step.reload:
            state = CustomerState.from_json(state.to_json())
        if isinstance(envelope.data, MergeData):
            merged = [states.pop(m) for m in envelope.data.merged_ids if m in states]
            state = fold(cid, state, merged, retention)
        else:
            state, _ = apply(state, envelope, settings)
        states[cid] = state
        card = score(state, step.now, population, settings)
        if population.tiers is not None:
            state.hold_complaints(card.tier)
        yield envelope.event_id, card.json


def cards() -> Iterator[bytes]:
    """Every recorded line: the event id, a tab, the card's JSON."""
    for config, steps in histories():
        for event_id, card in replay(config, steps):
            yield event_id.encode() + b"\t" + card


def recorded() -> list[bytes]:
    """The recording's lines."""
    return lzma.decompress(RECORDING.read_bytes()).split(b"\n")


def write() -> int:
    """Rewrite the recording from the current code; returns its size in bytes."""
    data = lzma.compress(b"\n".join(cards()), preset=9 | lzma.PRESET_EXTREME)
    RECORDING.parent.mkdir(exist_ok=True)
    RECORDING.write_bytes(data)
    return len(data)


if __name__ == "__main__":
    print(f"{RECORDING}: {write()} bytes")
