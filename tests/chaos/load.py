"""A steady mixed load, posted to ingest over HTTP the way a careful client would.

:class:`MixedStream` invents what customers do — profiles, orders through their lifecycle,
complaints, visits — with event ids of its own, so a retry is recognised. :class:`Load` offers
them at a steady rate through a few concurrent connections, singly and in small batches, and
retries every post on 503, 429, a 5xx or a broken connection until ingest answers 2xx; it
remembers every event that got a 2xx. An answer it cannot retry (a 4xx, a rejected item) is
an error the checks report.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx
from pydantic import TypeAdapter

from services.ingest.intake import prepare
from services.ingest.schemas import BatchItem
from shared.events import Envelope

Kind = Literal["order", "complaint", "visit", "customer"]

_PATHS: dict[Kind, str] = {
    "order": "/v1/orders",
    "complaint": "/v1/complaints",
    "visit": "/v1/visits",
    "customer": "/v1/customers",
}
_ITEM = TypeAdapter[Any](BatchItem)


@dataclass(frozen=True, slots=True)
class Offer:
    """One event as the client posts it (``body`` carries its ``event_id``)."""

    kind: Kind
    body: dict[str, Any]

    @property
    def event_id(self) -> str:
        return str(self.body["event_id"])

    @property
    def customer_id(self) -> str:
        return str(self.body["customer_id"])

    @property
    def event_type(self) -> str:
        if self.kind in ("order", "complaint"):
            return f"{self.kind}.{self.body['status']}"
        return "visit.recorded" if self.kind == "visit" else "customer.updated"

    def envelope(self) -> Envelope:
        """The event as ingest puts it on the topic (its facts; arrival time aside)."""
        item = _ITEM.validate_python({"type": self.kind, **self.body})
        prepared = prepare(item, header_key=None, source="chaos", received_at=datetime.now(UTC))
        return Envelope.from_json(prepared.value)


@dataclass
class _Customer:
    id: str
    profiled: bool = False
    placed: list[tuple[str, str, datetime]] = field(default_factory=list)  # id, amount, at
    paid: list[tuple[str, str, datetime]] = field(default_factory=list)
    open_complaints: list[tuple[str, datetime]] = field(default_factory=list)


class MixedStream:
    """What ``customers`` customers do, event after event.

    Everything happens on two UTC days, three and two days ago, so no customer has more than
    two purchase days: their rhythm is the population's (30 days), and no stage can move with
    time while a test runs, even across midnight. The stage history a clean replay computes
    later is then the one the service computed."""

    def __init__(self, rng: random.Random, prefix: str, customers: int) -> None:
        self._rng = rng
        self._prefix = prefix
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self._days = (today - timedelta(days=3), today - timedelta(days=2))
        self._customers = [_Customer(f"{prefix}-c{n}") for n in range(customers)]
        self._serial = 0

    def _id(self, what: str) -> str:
        self._serial += 1
        return f"{self._prefix}-{what}{self._serial}"

    def _at(self) -> datetime:
        # Before 20:00, so that what follows (payment, refund, resolution: at most 3 hours
        # later) stays on the same day.
        day = self._rng.choice(self._days)
        return day + timedelta(seconds=self._rng.randint(0, 20 * 3600))

    def __next__(self) -> Offer:
        rng, c = self._rng, self._rng.choice(self._customers)
        base = {"event_id": self._id("e"), "customer_id": c.id}
        if not c.profiled or rng.random() < 0.06:
            c.profiled = True
            return Offer(
                "customer",
                {
                    **base,
                    "occurred_at": self._at().isoformat(),
                    "name": f"Customer {c.id}",
                    "email": f"{c.id}@example.com",
                    "timezone": rng.choice(["Europe/Paris", "America/New_York", "Asia/Tokyo"]),
                    "consent": {"email": True, "marketing": rng.random() < 0.8},
                },
            )
        roll = rng.random()
        if roll < 0.22 or (roll < 0.45 and not c.placed):
            order_id, at = self._id("o"), self._at()
            amount = f"{rng.randint(500, 30_000) / 100:.2f}"
            c.placed.append((order_id, amount, at))
            return self._order(base, order_id, "placed", amount, at)
        if roll < 0.45:
            order_id, amount, at = c.placed.pop(rng.randrange(len(c.placed)))
            if rng.random() < 0.1:
                return self._order(base, order_id, "cancelled", amount, at + timedelta(hours=1))
            c.paid.append((order_id, amount, at))
            return self._order(base, order_id, "paid", amount, at + timedelta(minutes=5))
        if roll < 0.49 and c.paid:
            order_id, amount, at = c.paid.pop(rng.randrange(len(c.paid)))
            refund = f"{float(amount) / 2:.2f}"
            return self._order(base, order_id, "refunded", refund, at + timedelta(hours=2))
        if roll < 0.57:
            complaint_id, at = self._id("k"), self._at()
            c.open_complaints.append((complaint_id, at))
            return self._complaint(base, complaint_id, "opened", at)
        if roll < 0.63 and c.open_complaints:
            complaint_id, at = c.open_complaints.pop(0)
            return self._complaint(base, complaint_id, "resolved", at + timedelta(hours=3))
        body = {
            **base,
            "visit_id": self._id("v"),
            "occurred_at": self._at().isoformat(),
            "channel": rng.choice(["web", "store", "app"]),
        }
        return Offer("visit", body)

    def _order(
        self, base: dict[str, Any], order_id: str, status: str, amount: str, at: datetime
    ) -> Offer:
        body = {
            **base,
            "order_id": order_id,
            "occurred_at": at.isoformat(),
            "status": status,
            "amount": amount,
            "currency": "USD",
        }
        return Offer("order", body)

    def _complaint(
        self, base: dict[str, Any], complaint_id: str, status: str, at: datetime
    ) -> Offer:
        body = {
            **base,
            "complaint_id": complaint_id,
            "occurred_at": at.isoformat(),
            "status": status,
            "severity": "high",
        }
        return Offer("complaint", body)


class Load:
    """Offers ``rate`` events a second to ingest at ``url`` until :meth:`finish`.

    Use as ``async with Load(...) as load:``; leaving the block (or :meth:`finish`) stops
    offering new events and waits until every offered one has been accepted, or gives up
    after ``give_up_after`` seconds on an event (an error the checks report)."""

    def __init__(
        self,
        url: str,
        key: str,
        rng: random.Random,
        *,
        prefix: str,
        customers: int = 80,
        rate: float = 8.0,
        connections: int = 4,
        give_up_after: float = 120.0,
    ) -> None:
        self._url = url
        self._headers = {"Authorization": f"Bearer {key}"}
        self._rng = rng
        self._stream = MixedStream(rng, prefix, customers)
        self._rate = rate
        self._connections = connections
        self._give_up_after = give_up_after
        self._queue: asyncio.Queue[list[Offer]] = asyncio.Queue(maxsize=connections * 4)
        self._tasks: list[asyncio.Task[None]] = []
        self.offered: dict[str, Offer] = {}
        self.accepted: set[str] = set()
        # Why posts were retried ("503", "429", "connection", "500", ...).
        self.retries: Counter[str] = Counter()
        self.errors: list[str] = []

    async def __aenter__(self) -> Load:
        self._client = httpx.AsyncClient(
            base_url=self._url, headers=self._headers, timeout=10.0, trust_env=False
        )
        self._tasks = [asyncio.create_task(self._offer())]
        self._tasks += [asyncio.create_task(self._post_forever()) for _ in range(self._connections)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.finish()

    async def finish(self) -> None:
        """Stop offering; wait for what is offered to be accepted (or given up)."""
        if not self._tasks:
            return
        offering, *posting = self._tasks
        offering.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await offering
        await self._queue.join()
        for task in posting:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._client.aclose()

    async def until_accepted(self, count: int, timeout: float = 60) -> None:
        """Until at least ``count`` events have been accepted (to time a fault)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.accepted) < count:
            if loop.time() > deadline:
                raise TimeoutError(f"only {len(self.accepted)} of {count} events accepted")
            await asyncio.sleep(0.05)

    async def _offer(self) -> None:
        """Release events at a steady pace; a stalled ingest backs the queue up, and the
        offering waits (a client cannot outrun a service that does not answer)."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            size = self._rng.randint(2, 4) if self._rng.random() < 0.2 else 1
            offers = [next(self._stream) for _ in range(size)]
            for offer in offers:
                self.offered[offer.event_id] = offer
            await self._queue.put(offers)
            next_at = max(next_at + size / self._rate, loop.time() - 1)
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _post_forever(self) -> None:
        while True:
            offers = await self._queue.get()
            try:
                await self._post(offers)
            except Exception as exc:  # reported by the checks, never silently lost
                self.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                self._queue.task_done()

    async def _post(self, offers: list[Offer]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._give_up_after
        if len(offers) == 1:
            path, body = _PATHS[offers[0].kind], offers[0].body
        else:
            path, body = "/v1/events", {"events": [{"type": o.kind, **o.body} for o in offers]}
        delay = 0.1
        while True:
            try:
                resp = await self._client.post(path, json=body)
            except httpx.TransportError as exc:
                reason, wait = "connection", delay
                detail = f"{type(exc).__name__}"
            else:
                if 200 <= resp.status_code < 300:
                    self._record(offers, resp)
                    return
                if resp.status_code != 429 and resp.status_code < 500:
                    raise AssertionError(f"POST {path} answered {resp.status_code}: {resp.text}")
                reason, detail = str(resp.status_code), resp.text[:200]
                # Retry-After is honoured, but briefly: faults here last seconds, not minutes.
                after = resp.headers.get("retry-after", "")
                wait = min(float(after), 0.5) if after.isdigit() else delay
            self.retries[reason] += 1
            if loop.time() + wait > deadline:
                ids = [o.event_id for o in offers]
                raise AssertionError(f"{ids} never accepted; last answer {reason}: {detail}")
            await asyncio.sleep(wait)
            delay = min(delay * 2, 1.0)

    def _record(self, offers: list[Offer], resp: httpx.Response) -> None:
        if len(offers) == 1:
            self.accepted.add(offers[0].event_id)
            return
        for offer, result in zip(offers, resp.json()["results"], strict=True):
            if result["status"] in ("accepted", "duplicate"):
                self.accepted.add(offer.event_id)
            else:
                self.errors.append(f"{offer.event_id} rejected: {result}")
