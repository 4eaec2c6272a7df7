"""Helpers for end-to-end tests through ingest → scoring → outreach → a receiver."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.stack import Stack


async def post_events(stack: Stack, events: list[dict[str, Any]]) -> list[str]:
    resp = await stack.ingest.post(
        "/v1/events", json={"events": events}, headers=stack.auth("ingest")
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["rejected"] == 0, body
    return [r["event_id"] for r in body["results"]]


async def until(condition: Any, timeout: float = 30, what: str = "condition") -> Any:
    """Poll an async callable until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        await asyncio.sleep(0.1)


async def outreach_has_seen(stack: Stack, event_ids: list[str], timeout: float = 30) -> None:
    """Until outreach has applied the change of every one of these events."""
    from shared.changes import change_id_for

    wanted = [change_id_for("event", e) for e in event_ids]

    async def seen() -> bool:
        async with stack.engine.connect() as conn:
            n = await conn.scalar(
                text(
                    "SELECT count(*) FROM outreach.inbox "
                    "WHERE change_id = ANY(CAST(:ids AS text[]))"
                ),
                {"ids": wanted},
            )
        return bool(n == len(wanted))

    await until(seen, timeout, f"outreach applying {len(wanted)} changes")


async def actions_of(stack: Stack, customer_id: str) -> list[Any]:
    async with stack.engine.connect() as conn:
        return list(
            await conn.execute(
                text(
                    "SELECT * FROM outreach.actions WHERE customer_id = :c ORDER BY decided_at, "
                    "priority DESC"
                ),
                {"c": customer_id},
            )
        )


async def add_rule(stack: Stack, rule: dict[str, Any]) -> None:
    assert stack.outreach is not None
    resp = await stack.outreach.post("/v1/rules", json=rule, headers=stack.auth("marketing"))
    assert resp.status_code in (200, 201), resp.text


async def add_webhook_channel(stack: Stack, url: str, secret: str) -> None:
    assert stack.outreach is not None
    resp = await stack.outreach.post(
        "/v1/channels",
        headers=stack.auth("marketing"),
        json={"id": "receiver", "kind": "webhook", "config": {"url": url}, "secret": secret},
    )
    assert resp.status_code in (200, 201), resp.text


async def tick(stack: Stack) -> int:
    assert stack.outreach is not None
    resp = await stack.outreach.post("/v1/ops/tick", headers=stack.auth("ops"))
    assert resp.status_code == 200, resp.text
    stack.outreach_app.state.delivery.nudge()  # type: ignore[union-attr]
    return int(resp.json()["decided"])


# -- helpers for scenario tests (time, stages, the ledger, the changes topic) ------------------


async def scoring_op(stack: Stack, op: str) -> dict[str, Any]:
    """``POST /v1/ops/{op}`` on scoring (``sweep`` or ``refit``) at scoring's clock."""
    resp = await stack.scoring.post(f"/v1/ops/{op}", headers=stack.auth("ops"))
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def statuses(stack: Stack, customer_id: str) -> dict[str, tuple[str, str | None]]:
    """``{rule_id: (status, reason)}`` of a customer's actions (one action per rule)."""
    rows = await actions_of(stack, customer_id)
    out = {r.rule_id: (r.status, r.reason) for r in rows}
    assert len(out) == len(rows), f"{customer_id}: a rule acted more than once: {rows}"
    return out


async def until_status(
    stack: Stack, customer_id: str, rule_id: str, status: str, timeout: float = 30
) -> Any:
    """Until the customer's one action of ``rule_id`` has ``status``; returns its row."""

    async def reached() -> Any:
        rows = [r for r in await actions_of(stack, customer_id) if r.rule_id == rule_id]
        assert len(rows) <= 1, rows
        return rows[0] if rows and rows[0].status == status else None

    return await until(reached, timeout, f"{rule_id} for {customer_id} {status}")


async def nothing_in_flight(stack: Stack) -> bool:
    """No action is pending: none is due, being sent under a worker's lease, or waiting for a
    retry. Every send the ledger allows so far has an outcome: what a receiver holds is final
    (until the clock moves or a new action is decided)."""
    async with stack.engine.connect() as conn:
        n = await conn.scalar(
            text("SELECT count(*) FROM outreach.actions WHERE status = 'pending'")
        )
    return bool(n == 0)


async def outreach_caught_up(stack: Stack, timeout: float = 30) -> None:
    """Until outreach's consumer group has committed every record now on the changes topic,
    i.e. applied it (offsets are committed only after the batch's transaction)."""

    from shared.kafka_read import end_offsets
    from shared.kafka_security import start_admin
    from shared.topics import Topics

    assert stack.outreach_app is not None
    topic = Topics.from_settings(stack.settings).changes
    end = await end_offsets(stack.settings, topic)
    wanted = {tp: offset for tp, offset in end.items() if offset > 0}
    group = stack.outreach_app.state.consumer.group_id
    admin = await start_admin(stack.settings)
    try:

        async def committed() -> bool:
            offsets = await admin.list_consumer_group_offsets(group)
            return all(tp in offsets and offsets[tp].offset >= o for tp, o in wanted.items())

        await until(committed, timeout, f"outreach committing {topic}")
    finally:
        await admin.close()


async def publish_changes(stack: Stack, changes: list[dict[str, Any]]) -> None:
    """Publish changes straight onto the changes topic, as scoring would (each keyed by its
    customer, in one go: a consumer may read them in one batch), then wait until outreach
    has applied all of them."""
    import orjson

    from shared.kafka import Record, publish_many, start_producer
    from shared.topics import Topics

    topic = Topics.from_settings(stack.settings).changes
    producer = await start_producer(stack.settings)
    try:
        records = [Record(topic, c["customer_id"].encode(), orjson.dumps(c)) for c in changes]
        await publish_many(producer, records, timeout=30)
    finally:
        await producer.stop()
    await outreach_caught_up(stack)


async def consumers_assigned(stack: Stack, timeout: float = 30) -> None:
    """Until scoring's (and outreach's) consumer owns every partition of its topic.

    ``isolated_stack`` creates its topics moments before the consumers join their groups.
    When the broker has not yet published the new topics' metadata, the group's assignment
    hands out no partitions at all, and aiokafka only looks at the metadata again after
    ``metadata_max_age_ms`` (5 minutes): the pipeline would stand still. A forced refresh
    shows the consumer the partitions, and it rejoins its group to take them.
    """
    apps = [stack.scoring_app, *([stack.outreach_app] if stack.outreach_app else [])]
    for app in apps:
        kafka = app.state.consumer._consumer  # the BatchConsumer's AIOKafkaConsumer

        async def assigned(kafka: Any = kafka) -> bool:
            if len(kafka.assignment()) >= stack.settings.topic_partitions:
                return True
            await kafka._client.force_metadata_update()
            return False

        await until(assigned, timeout, f"{app.title}'s consumer owning its partitions")


# Each customer's stored facts (as JSON text) and event-time stage history.
ScoringStates = dict[str, tuple[str, list[tuple[str, str, str]]]]


async def scoring_states(engine: AsyncEngine) -> ScoringStates:
    """What a clean replay must reproduce: every customer's facts and stage history."""
    async with engine.connect() as conn:
        facts = {
            r.customer_id: r.state
            for r in await conn.execute(
                text("SELECT customer_id, state::text AS state FROM scoring.customers")
            )
        }
        history: dict[str, list[tuple[str, str, str]]] = {}
        for r in await conn.execute(
            text(
                "SELECT customer_id, from_stage, to_stage, at FROM scoring.stage_history "
                "ORDER BY customer_id, at, id"
            )
        ):
            history.setdefault(r.customer_id, []).append((r.from_stage, r.to_stage, str(r.at)))
    return {cid: (state, history.get(cid, [])) for cid, state in facts.items()}


async def actions_published(stack: Stack, customer_id: str, timeout: float = 30) -> list[Any]:
    """The messages of the actions stream (``crm.outreach-actions.v1``) under the customer's
    key, in order, once outreach's outbox has relayed all it holds."""
    import orjson

    from shared.kafka_read import read_until_end
    from shared.topics import Topics

    async def relayed() -> bool:
        async with stack.engine.connect() as conn:
            return not await conn.scalar(text("SELECT count(*) FROM outreach.outbox"))

    await until(relayed, timeout, "outreach's outbox relayed")
    topic = Topics.from_settings(stack.settings).actions
    return [
        orjson.loads(record.value)
        async for batch in read_until_end(stack.settings, topic)
        for record in batch
        if record.key == customer_id.encode()
    ]
