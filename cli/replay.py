"""Replaying a shop's order export through the ingest API.

    tend replay orders.csv --url http://127.0.0.1:8001 --key $TEND_INGEST_KEY \\
        [--map customer_id=Customer,order_id=Invoice,occurred_at=Date,amount=Total] \\
        [--shift-to-today]

Each row becomes a paid order. A row that cannot become one (a missing id, a date that does
not parse, a negative amount) is reported with its line number and reason and the replay
carries on; so is a row ingest rejects. Everything ingest accepted is durably on Kafka (a 503
is retried, so nothing accepted is lost and nothing is counted twice).
"""

from __future__ import annotations

import asyncio
import csv
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx

FIELDS = ("customer_id", "order_id", "occurred_at", "amount")


@dataclass(frozen=True, slots=True)
class Order:
    line: int
    customer_id: str
    order_id: str
    occurred_at: datetime
    amount: Decimal


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    reason: str


@dataclass
class ReplayReport:
    accepted: int = 0
    duplicates: int = 0
    bad: list[BadRow] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return len(self.bad)


def parse_mapping(text: str | None) -> dict[str, str]:
    """``customer_id=Customer,amount=Total`` → which CSV column feeds each order field."""
    mapping = {f: f for f in FIELDS}
    for part in filter(None, (text or "").split(",")):
        key, sep, column = part.partition("=")
        if not sep or key.strip() not in FIELDS or not column.strip():
            raise ValueError(f"bad mapping {part!r}: use field=column with field in {FIELDS}")
        mapping[key.strip()] = column.strip()
    return mapping


def parse_time(value: str) -> datetime:
    """ISO 8601 with an offset, or a bare date (``2026-11-20``, ``20261120``) taken as noon
    UTC — an order export often has days, not instants."""
    value = value.strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d", "%d/%m/%Y"):
        try:
            return datetime.combine(datetime.strptime(value, fmt).date(), time(12), UTC)
        except ValueError:
            continue
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("has no UTC offset")
    return moment


def read_orders(
    rows: Iterable[dict[str, str]], mapping: dict[str, str], first_line: int = 2
) -> Iterator[Order | BadRow]:
    for line, row in enumerate(rows, start=first_line):
        try:
            values = {f: (row.get(mapping[f]) or "").strip() for f in FIELDS}
            missing = [f for f in ("customer_id", "occurred_at", "amount") if not values[f]]
            if missing:
                raise ValueError(f"{', '.join(missing)} missing")
            amount = Decimal(values["amount"])
            if amount < 0 or not amount.is_finite():
                raise ValueError(f"amount {values['amount']} is negative or not a number")
            yield Order(
                line,
                values["customer_id"],
                values["order_id"] or f"line-{line}",
                parse_time(values["occurred_at"]),
                amount,
            )
        except (ValueError, InvalidOperation) as exc:
            yield BadRow(line, f"{exc}" if str(exc) else "not a number")


def read_csv(path: Path, mapping: dict[str, str]) -> Iterator[Order | BadRow]:
    with path.open(newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t") if sample else csv.excel
        yield from read_orders(csv.DictReader(f, dialect=dialect), mapping)


def shift_to_today(orders: Sequence[Order], today: date) -> list[Order]:
    """Move the whole history so its last day is ``today`` (gaps between orders are kept)."""
    if not orders:
        return []
    delta = timedelta(days=(today - max(o.occurred_at for o in orders).date()).days)
    return [
        Order(o.line, o.customer_id, o.order_id, o.occurred_at + delta, o.amount) for o in orders
    ]


def order_event(order: Order, currency: str) -> dict[str, Any]:
    return {
        "type": "order",
        "order_id": order.order_id,
        "customer_id": order.customer_id,
        "occurred_at": order.occurred_at.isoformat(),
        "status": "paid",
        "amount": str(order.amount),
        "currency": currency,
    }


async def post_events(
    client: httpx.AsyncClient,
    events: Sequence[tuple[int, dict[str, Any]]],
    report: ReplayReport,
    *,
    batch: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Post (line, event) pairs in batches; a 503 is retried after its Retry-After."""
    for start in range(0, len(events), batch):
        chunk = events[start : start + batch]
        while True:
            resp = await client.post("/v1/events", json={"events": [e for _, e in chunk]})
            if resp.status_code == 503:
                await asyncio.sleep(float(resp.headers.get("retry-after", "2")))
                continue
            if resp.status_code != 200:
                raise RuntimeError(f"ingest answered {resp.status_code}: {resp.text[:300]}")
            break
        body = resp.json()
        report.accepted += body["accepted"]
        report.duplicates += body["duplicates"]
        for result in body["results"]:
            line = chunk[result["index"]][0]
            if result["status"] == "rejected":
                reason = "; ".join(
                    f"{e['field'].split('.', 2)[-1]}: {e['reason']}" for e in result["errors"]
                )
                report.bad.append(BadRow(line, reason))
            else:
                report.event_ids.append(result["event_id"])
        if progress:
            progress(len(chunk))


class Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.done, self.label = max(total, 1), 0, label

    def __call__(self, n: int) -> None:
        self.done += n
        filled = int(30 * self.done / self.total)
        print(
            f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done:,}/{self.total:,}",
            end="",
            file=sys.stderr,
            flush=True,
        )
        if self.done >= self.total:
            print(file=sys.stderr)


async def replay_file(
    path: Path, url: str, key: str, mapping: dict[str, str], *, shift: bool, currency: str = "USD"
) -> ReplayReport:
    report = ReplayReport()
    orders: list[Order] = []
    for item in read_csv(path, mapping):
        if isinstance(item, BadRow):
            report.bad.append(item)
        else:
            orders.append(item)
    if shift:
        orders = shift_to_today(orders, datetime.now(UTC).date())
    events = [(o.line, order_event(o, currency)) for o in orders]
    async with httpx.AsyncClient(
        base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        await post_events(client, events, report, progress=Progress(len(events), "replay"))
    report.bad.sort(key=lambda b: b.line)
    return report
