"""`tend replay` on a shop's CSV: bad rows are reported with their line and reason, the rest
is accepted, and nothing accepted is lost."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from cli.replay import (
    BadRow,
    ReplayReport,
    order_event,
    parse_mapping,
    post_events,
    read_csv,
)
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.kafka_io import read_all

pytestmark = pytest.mark.integration


async def test_a_csv_with_bad_rows_reports_them_and_carries_on(
    ingest: httpx.AsyncClient, keys: dict[str, str], settings: CommonSettings, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:6]
    path = tmp_path / "export.csv"
    path.write_text(
        "Customer;Invoice;Date;Total\n"
        f"{run}-a;1001;2026-03-01;19.90\n"
        f"{run}-a;1002;2026-04-11;-5\n"  # line 3: negative
        f"{run}-b;1003;not a date;7.00\n"  # line 4: date
        f"{run}-b;1004;20260502;12.00\n"
        f";1005;2026-05-03;1.00\n"  # line 6: no customer
        f"{run}-c;1006;2026-05-04T10:00:00+02:00;3.50\n"
        f"{run} d;1007;2026-05-05;4.00\n"  # line 8: ingest rejects the id
    )
    mapping = parse_mapping("customer_id=Customer,order_id=Invoice,occurred_at=Date,amount=Total")
    report = ReplayReport()
    rows = []
    for item in read_csv(path, mapping):
        if isinstance(item, BadRow):
            report.bad.append(item)
        else:
            rows.append((item.line, order_event(item, "USD")))
    ingest.headers["Authorization"] = f"Bearer {keys['ingest']}"
    try:
        await post_events(ingest, rows, report)
    finally:
        del ingest.headers["Authorization"]

    assert report.accepted == 3
    assert sorted(b.line for b in report.bad) == [3, 4, 6, 8]
    reasons = {b.line: b.reason for b in report.bad}
    assert "negative" in reasons[3]
    assert "customer_id missing" in reasons[6]
    assert "customer_id" in reasons[8]
    on_topic = {
        orjson.loads(r.value)["event_id"]
        for r in await read_all(
            settings.kafka_bootstrap_servers, Topics.from_settings(settings).events
        )
    }
    assert set(report.event_ids) <= on_topic
