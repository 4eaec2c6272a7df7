"""The demo's history is the same on every run of a day: ``make run`` on a database that
already holds it posts the very same events, and ingest finds them all already there."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from deploy.local import demo


def test_the_demo_posts_the_same_events_whenever_it_runs() -> None:
    day = date(2026, 6, 1)
    purchases = demo.shifted(demo.read_cdnow(demo.cdnow_sample()), day)
    first = demo.demo_events(purchases, day)
    again = demo.demo_events(purchases, day)
    assert first == again
    # The last day's orders are there, at the day's start: nothing lies in the future.
    last_day = [
        e for e in first if e["type"] == "order" and e["occurred_at"].startswith("2026-06-01")
    ]
    assert last_day and all(e["occurred_at"] == "2026-06-01T00:00:00+00:00" for e in last_day)


def test_only_recent_complaints_are_left_open() -> None:
    day = date(2026, 6, 1)
    purchases = demo.shifted(demo.read_cdnow(demo.cdnow_sample()), day)
    events = demo.demo_events(purchases, day)
    opened = {
        e["complaint_id"]: datetime.fromisoformat(e["occurred_at"]).date()
        for e in events
        if e["type"] == "complaint" and e["status"] == "opened"
    }
    resolved = {
        e["complaint_id"] for e in events if e["type"] == "complaint" and e["status"] == "resolved"
    }
    still_open = {k: at for k, at in opened.items() if k not in resolved}
    month_ago = day - timedelta(days=demo.COMPLAINT_BACKLOG_DAYS)
    # A backlog the care team works through: some recent complaints open, none for good.
    assert still_open and len(still_open) < len(opened) / 4
    assert all(at >= month_ago for at in still_open.values())
    assert any(at < month_ago for at in opened.values())
