"""Every decided action goes on the actions outbox (what ``crm.outreach-actions.v1`` carries)
once, in the batch's order, saying what the ledger says of it: its id, rule, customer,
occurrence, kind, channel, status, reason, when it was decided and when it may go out, its
arm, and what delivery made of it so far. A match the ledger already holds adds no second
message; a decision made anew (a held promotion released) adds one, saying when.

On the real PostgreSQL, through the consumer's own write path (``ChangeApplier.apply``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.shell.opt_out import unsubscribe
from tests.integration.test_outreach_batch_locks import NOW, Shop

pytestmark = pytest.mark.integration

_LEDGER = text(
    """
    SELECT id, rule_id, customer_id, occurrence, kind, channel, status, reason, decided_at,
        not_before, arm, sent_at, attempts
    FROM outreach.actions WHERE customer_id LIKE :p
    """
)
_MESSAGES = text(
    "SELECT id, customer_id, payload FROM outreach.outbox WHERE customer_id LIKE :p ORDER BY id"
)


def as_published(
    row: Any, *, decided_again_at: str | None, updated_at: str | None = None
) -> dict[str, Any]:
    """What the stream's message of a ledger row says, field by field; ``updated_at``: when
    the row came to say it (a new decision's instant, else its first decision's)."""
    return {
        "action_id": row.id,
        "rule_id": row.rule_id,
        "customer_id": row.customer_id,
        "occurrence": row.occurrence,
        "kind": row.kind,
        "channel": row.channel,
        "status": row.status,
        "reason": row.reason,
        "decided_at": row.decided_at.isoformat(),
        "not_before": row.not_before.isoformat() if row.not_before else None,
        "arm": row.arm,
        "decided_again_at": decided_again_at,
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
        "attempts": row.attempts,
        "updated_at": updated_at or decided_again_at or row.decided_at.isoformat(),
    }


async def _stream(engine: AsyncEngine, shop: Shop) -> tuple[dict[str, Any], Sequence[Any]]:
    async with engine.connect() as conn:
        ledger = {r.id: r for r in await conn.execute(_LEDGER, {"p": f"lk-{shop.tag}-%"})}
        messages = (await conn.execute(_MESSAGES, {"p": f"lk-{shop.tag}-%"})).all()
    return ledger, messages


async def test_each_decided_action_is_on_the_actions_outbox_once_as_the_ledger_has_it(
    engine: AsyncEngine,
) -> None:
    shop = Shop(engine)
    shop.use(
        {
            "id": "mature-care",
            "trigger": {"type": "stage", "to": ["mature"]},
            "action": {"kind": "care", "channel": "webhook", "template": {"body": "Hi"}},
        },
        {
            "id": "mature-news",
            "trigger": {"type": "stage", "to": ["mature"]},
            "control_percent": 50,
            "action": {"kind": "announcement", "channel": "webhook", "template": {"body": "New"}},
        },
    )
    # Customer 0 has a complaint open: their announcement is held, the care goes out.
    batch = [shop.change(0, complaints_open=1), *(shop.change(n) for n in range(1, 8))]
    recorded = await shop.applier.apply(batch)
    ledger, messages = await _stream(engine, shop)
    assert len(recorded) == len(ledger) == len(messages) == 16
    assert [r.action_id for r in recorded] == [
        orjson.loads(m.payload)["action_id"] for m in messages
    ]
    for m in messages:
        sent = orjson.loads(m.payload)
        row = ledger[sent["action_id"]]
        assert m.customer_id == row.customer_id
        assert sent == as_published(row, decided_again_at=None)
    held = {(r.customer_id, r.rule_id) for r in ledger.values() if r.status == "held"}
    assert held == {(shop.cid(0), f"lk-{shop.tag}-mature-news")}

    # The same episode again: the ledger holds every match, nothing new goes on the stream.
    assert await shop.applier.apply([shop.change(n) for n in range(1, 8)]) == []
    assert len((await _stream(engine, shop))[1]) == 16

    # Customer 0's complaint is closed: their held announcement is decided again, and the
    # stream says so in a message of its own, after the first, as the ledger has it now.
    [held_id] = [r.id for r in ledger.values() if r.status == "held"]
    assert await shop.applier.apply([shop.change(0)]) == []
    ledger, messages = await _stream(engine, shop)
    assert len(messages) == 17
    again = orjson.loads(messages[-1].payload)
    row = ledger[held_id]
    assert row.status in ("pending", "control")
    assert again == as_published(row, decided_again_at=NOW.isoformat())


async def test_an_unsubscribe_puts_what_it_suppressed_on_the_stream_again(
    engine: AsyncEngine,
) -> None:
    shop = Shop(engine)
    shop.use(
        {
            "id": "mature-news",
            "trigger": {"type": "stage", "to": ["mature"]},
            "action": {"kind": "announcement", "channel": "webhook", "template": {"body": "New"}},
        }
    )
    # Held for an open complaint, then the customer unsubscribes through their link.
    await shop.applier.apply([shop.change(0, complaints_open=1)])
    async with engine.begin() as conn:
        done = await unsubscribe(conn, shop.cid(0), NOW)
    assert done.suppressed_actions == 1
    ledger, messages = await _stream(engine, shop)
    [row] = ledger.values()
    sent = [orjson.loads(m.payload) for m in messages]
    assert [(m["action_id"], m["status"], m["reason"], m["decided_again_at"]) for m in sent] == [
        (row.id, "held", "open_complaint", None),
        (row.id, "suppressed", "unsubscribed", NOW.isoformat()),
    ]
    assert (row.status, row.reason) == ("suppressed", "unsubscribed")
