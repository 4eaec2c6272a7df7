"""Customer events for tests: one paid order or one event as JSON, and seeded streams of
realistic events for tests that replay and compare."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.events import Envelope, EventType, OrderData, OrderStatus


def paid_order(
    customer_id: str, at: datetime, amount: str = "40.00", order_id: str | None = None
) -> Envelope:
    """An ``order.paid`` event at ``at``, received then (the order id: a fresh one)."""
    return Envelope(
        event_id=str(uuid.uuid4()),
        event_type=EventType.ORDER_PAID,
        customer_id=customer_id,
        occurred_at=at,
        received_at=at,
        source="test",
        data=OrderData(
            order_id=order_id or f"{customer_id}-{uuid.uuid4().hex[:8]}",
            status=OrderStatus.PAID,
            amount=Decimal(amount),
            currency="USD",
        ),
    )


def event_json(
    customer_id: str,
    at: datetime,
    event_type: str,
    data: dict[str, Any],
    event_id: str | None = None,
) -> dict[str, Any]:
    """An event as JSON (as a change carries it), happened and received at ``at``."""
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "event_type": event_type,
        "schema_version": 1,
        "customer_id": customer_id,
        "occurred_at": at.isoformat(),
        "received_at": at.isoformat(),
        "source": "test",
        "data": data,
    }


def random_history(customers: int, seed: int, *, prefix: str = "c") -> list[Envelope]:
    """Profiles, orders through their lifecycle, refunds, cancellations, complaints and visits
    for ``customers`` customers over the past year, interleaved in time order."""
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(microsecond=0)
    out: list[tuple[datetime, dict[str, object]]] = []

    def add(cid: str, etype: str, at: datetime, data: dict[str, object]) -> None:
        out.append(
            (
                at,
                {
                    "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "event_type": etype,
                    "customer_id": cid,
                    "occurred_at": at,
                    "received_at": now,
                    "source": "test",
                    "data": data,
                },
            )
        )

    for n in range(customers):
        cid = f"{prefix}{n}"
        start = now - timedelta(days=rng.randint(30, 365))
        add(
            cid,
            "customer.updated",
            start,
            {
                "name": f"Customer {n}",
                "email": f"c{n}@example.com",
                "timezone": rng.choice(["Europe/Paris", "America/New_York", "Asia/Tokyo"]),
                "consent": {"email": True, "sms": False, "marketing": rng.random() < 0.7},
            },
        )
        t = start
        for k in range(rng.randint(1, 8)):
            t += timedelta(days=rng.randint(1, 60), minutes=rng.randint(0, 600))
            if t > now - timedelta(minutes=1):
                break
            oid = f"{cid}-o{k}"
            amount = f"{Decimal(rng.randint(500, 30000)) / 100:.2f}"
            order = {"order_id": oid, "amount": amount, "currency": "USD"}
            add(cid, "order.placed", t, {**order, "status": "placed"})
            add(cid, "order.paid", t + timedelta(minutes=5), {**order, "status": "paid"})
            roll = rng.random()
            if roll < 0.1:
                add(
                    cid, "order.cancelled", t + timedelta(hours=1), {**order, "status": "cancelled"}
                )
            elif roll < 0.2:
                add(
                    cid,
                    "order.refunded",
                    t + timedelta(days=2),
                    {**order, "status": "refunded", "amount": f"{Decimal(amount) / 2:.2f}"},
                )
            if rng.random() < 0.3:
                add(
                    cid,
                    "visit.recorded",
                    t - timedelta(hours=2),
                    {"visit_id": f"{oid}-v", "channel": rng.choice(["web", "store", "app"])},
                )
            if rng.random() < 0.1:
                kid = f"{oid}-k"
                add(
                    cid,
                    "complaint.opened",
                    t + timedelta(days=1),
                    {"complaint_id": kid, "status": "opened", "severity": "high"},
                )
                if rng.random() < 0.5:
                    add(
                        cid,
                        "complaint.resolved",
                        t + timedelta(days=3),
                        {"complaint_id": kid, "status": "resolved", "severity": "high"},
                    )
    out.sort(key=lambda item: item[0])
    return [Envelope.model_validate(e) for at, e in out if at <= now]
