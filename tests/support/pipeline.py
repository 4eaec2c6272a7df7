"""Helpers for end-to-end tests through ingest → scoring → outreach → a receiver."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

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
