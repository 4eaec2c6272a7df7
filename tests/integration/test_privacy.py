"""The right to erasure and the right of access, end to end on the real broker and database.

One customer with a profile, orders, a complaint, a poison record and a delivered action is
exported, then erased; afterwards no table of any service and no dead letter still carries
anything of theirs, the revenue totals are unchanged, and neither a client replaying their old
events nor a scoring rebuild from the topic brings them back. A customer who returns after the
erasure starts afresh.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from services.outreach.settings import OutreachSettings
from services.scoring.settings import ScoringSettings
from services.scoring.shell.rebuild import rebuild
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.integration.test_outreach_e2e import order, profile, webhook_rule
from tests.support.kafka_io import read_all
from tests.support.pipeline import add_rule, add_webhook_channel, post_events, until
from tests.support.receivers import WebhookReceiver
from tests.support.stack import Stack, isolated_stack

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
# What must vanish: the customer's id and every personal value they gave.
ERASED = "cust-erase-me"
NAME = "Zebulon Quartermaine"
EMAIL = "zebulon.quartermaine@example.org"
PHONE = "+33 6 12 34 56 78"
COMPLAINT = "The parcel from Quartermaine arrived crushed"
PERSONAL = (ERASED, NAME, EMAIL, PHONE, COMPLAINT)


@pytest.fixture
async def stack(settings: CommonSettings) -> AsyncIterator[Stack]:
    async with isolated_stack(
        settings, outreach=OutreachSettings(allow_private_webhooks=True)
    ) as s:
        yield s


def history_of(cid: str, **profile_fields: Any) -> list[dict[str, Any]]:
    return [
        profile(cid, occurred_at=(NOW - timedelta(days=40)).isoformat(), **profile_fields),
        order(cid, f"{cid}-o1", NOW - timedelta(days=30), "120.00"),
        order(cid, f"{cid}-o2", NOW - timedelta(days=3), "80.00"),
        {
            "type": "complaint",
            "complaint_id": f"{cid}-c1",
            "customer_id": cid,
            "status": "opened",
            "severity": "high",
            "text": COMPLAINT if cid == ERASED else "late",
            "occurred_at": (NOW - timedelta(days=2)).isoformat(),
        },
    ]


async def rows_mentioning(stack: Stack, needles: tuple[str, ...]) -> list[str]:
    """Every row of every table of every service whose text contains one of ``needles``."""
    found = []
    async with stack.engine.connect() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema IN ('ingest', 'scoring', 'outreach', 'auth') "
                    "AND table_type = 'BASE TABLE'"
                )
            )
        ).all()
        for schema, table in tables:
            rows = await conn.execute(text(f'SELECT t::text AS row FROM {schema}."{table}" AS t'))
            for (row,) in rows:
                # bytea columns (outbox payloads) print as hex: look for the hex of each needle
                if any(n in row or n.encode().hex() in row for n in needles):
                    found.append(f"{schema}.{table}: {row[:200]}")
    return found


async def card_status(stack: Stack, cid: str) -> int:
    resp = await stack.scoring.get(f"/v1/customers/{cid}", headers=stack.auth("ops"))
    return resp.status_code


async def test_an_erased_customer_is_gone_everywhere_and_stays_gone(stack: Stack) -> None:
    assert stack.outreach is not None and stack.ingest_app is not None
    topics = Topics.from_settings(stack.settings)
    async with WebhookReceiver() as hook:
        await add_webhook_channel(stack, hook.url, hook.secret)
        rule = webhook_rule("apology", {"type": "event", "event": "complaint.opened"}, "apology")
        rule["action"]["template"]["body"] = "Dear {{ customer.name }}, we are sorry."
        await add_rule(stack, rule)
        mine = history_of(ERASED, name=NAME, email=EMAIL, phone=PHONE)
        kept = history_of("cust-kept")
        await post_events(stack, mine + kept)
        # Both apologies are delivered: outreach holds a rendered message with the name.
        await hook.wait_for(2)

        # The customer asks not to be contacted: a suppression, and its audit entry.
        suppress = await stack.outreach.post(
            "/v1/suppressions",
            json={"customer_id": ERASED, "reason": f"asked by phone, {PHONE}"},
            headers=stack.auth("marketing"),
        )
        assert suppress.status_code in (200, 201), suppress.text

        # A poison record of the customer's lands in the dead letters.
        producer = stack.ingest_app.state.producer
        await producer.send_and_wait(topics.events, b"{not json " + EMAIL.encode(), ERASED.encode())
        await until(
            lambda: _dead_letters(stack, ERASED), what="the poison record in the dead letters"
        )

        before = (await stack.scoring.get("/v1/stats/overview", headers=stack.auth("ops"))).json()

        # Access: one document with what every service holds.
        export = await stack.ingest.get(f"/v1/customers/{ERASED}/export", headers=stack.auth("ops"))
        assert export.status_code == 200, export.text
        doc = export.json()
        assert {e["event_id"] for e in doc["ingest"]["events"]} == {
            r["event_id"] for r in await _accepted_ids(stack, mine)
        }
        assert doc["scoring"]["card"]["profile"]["name"] == NAME
        assert doc["scoring"]["card"]["value"]["orders"] == 2
        assert len(doc["scoring"]["events"]) == len(mine)
        [action] = doc["outreach"]["actions"]
        assert action["kind"] == "apology" and NAME in action["body"]
        assert doc["outreach"]["card"]["profile"]["email"] == EMAIL
        assert PHONE in doc["outreach"]["suppression"]["reason"]
        assert await _delivery_attempts(stack, action["id"]) == 1

        # Erasure.
        resp = await stack.ingest.delete(f"/v1/customers/{ERASED}", headers=stack.auth("ops"))
        assert resp.status_code == 202, resp.text
        assert resp.json()["customer_id"] == ERASED

        async def forgotten() -> bool:
            return await card_status(stack, ERASED) == 404 and not await rows_mentioning(
                stack, PERSONAL
            )

        await until(forgotten, timeout=30, what="every service forgetting the customer")
        # The action stays in the ledger for the counts; its delivery attempts go.
        assert await _delivery_attempts(stack, action["id"]) == 0
        assert await card_status(stack, "cust-kept") == 200

        # The dead letters: each of the customer's is followed by a tombstone under its key.
        dlq = await read_all(stack.settings.kafka_bootstrap_servers, topics.dlq)
        theirs = [r for r in dlq if dict(r.headers).get("dlq.source.key") == ERASED.encode()]
        assert theirs and all(
            any(
                t.value is None
                and (t.key, t.partition) == (r.key, r.partition)
                and t.offset > r.offset
                for t in dlq
            )
            for r in theirs
        )

        # Aggregates that are not personal stay true.
        after = (await stack.scoring.get("/v1/stats/overview", headers=stack.auth("ops"))).json()
        assert Decimal(after["lifetime_revenue"]) == Decimal(before["lifetime_revenue"])
        assert after["customers"] == before["customers"] - 1
        assert after["erased"] == 1
        summary = await stack.outreach.get("/v1/actions/summary", headers=stack.auth("ops"))
        assert sum(r["count"] for r in summary.json()["rows"]) == 2

        # Nothing left to export.
        gone = await stack.ingest.get(f"/v1/customers/{ERASED}/export", headers=stack.auth("ops"))
        assert gone.status_code == 404

        # A client replaying the old events is refused, item by item, naming the reason.
        replay = await stack.ingest.post(
            "/v1/events", json={"events": mine}, headers=stack.auth("ingest")
        )
        assert replay.status_code == 200, replay.text
        for result in replay.json()["results"]:
            assert result["status"] == "rejected"
            [error] = result["errors"]
            assert error["field"].endswith("customer_id") and "erased" in error["reason"]
        single = {k: v for k, v in mine[1].items() if k != "type"}
        one = await stack.ingest.post("/v1/orders", json=single, headers=stack.auth("ingest"))
        assert one.status_code == 422 and "erased" in one.text
        marker = order("cust-kept", "cust-kept-o3", NOW - timedelta(days=1), "5.00")
        [marker_id] = await post_events(stack, [marker])
        await until(lambda: _applied(stack, marker_id), what="the marker event applied")
        assert await card_status(stack, ERASED) == 404
        assert await rows_mentioning(stack, PERSONAL) == []
        assert len(hook.received) == 2

        # A rebuild from the topic replays everything, the erasure included: still gone.
        rebuilt = await rebuild(
            stack.settings,
            ScoringSettings(consumer_group=f"{stack.settings.topic_prefix}rebuild"),
        )
        assert rebuilt > 0
        assert await card_status(stack, ERASED) == 404
        assert await rows_mentioning(stack, PERSONAL) == []

        # A customer who comes back after the erasure starts afresh.
        back = order(ERASED, "new-life-1", datetime.now(UTC), "10.00")
        [back_id] = await post_events(stack, [back])
        await until(lambda: _applied(stack, back_id), what="the returning customer's order")
        card = (
            await stack.scoring.get(f"/v1/customers/{ERASED}", headers=stack.auth("ops"))
        ).json()
        assert card["value"]["orders"] == 1
        assert Decimal(card["value"]["lifetime_spend"]) == Decimal("10.00")
        assert card["profile"].get("name") is None


async def _accepted_ids(stack: Stack, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Posting again answers `duplicate` with the original ids, publishing nothing new.
    resp = await stack.ingest.post(
        "/v1/events", json={"events": events}, headers=stack.auth("ingest")
    )
    results: list[dict[str, Any]] = resp.json()["results"]
    assert {r["status"] for r in results} == {"duplicate"}
    return results


async def _dead_letters(stack: Stack, cid: str) -> bool:
    topics = Topics.from_settings(stack.settings)
    return any(
        dict(r.headers).get("dlq.source.key") == cid.encode()
        for r in await read_all(stack.settings.kafka_bootstrap_servers, topics.dlq)
    )


async def _applied(stack: Stack, event_id: str) -> bool:
    async with stack.engine.connect() as conn:
        n = await conn.scalar(
            text("SELECT count(*) FROM scoring.inbox WHERE event_id = :e"), {"e": event_id}
        )
    return bool(n)


async def _delivery_attempts(stack: Stack, action_id: str) -> int:
    async with stack.engine.connect() as conn:
        found = await conn.scalar(
            text("SELECT count(*) FROM outreach.delivery_attempts WHERE action_id = :id"),
            {"id": action_id},
        )
    return int(found or 0)
