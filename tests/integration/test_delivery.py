"""Delivery against the real ledger (PostgreSQL) and real receivers (HTTP, SMTP).

Actions and channels are inserted with SQL (deciding is not delivery's job). Each test drives
its own :class:`DeliveryWorker` on a FixedClock in 2001: only rows due by then are picked, so
the worker never touches another test's pending actions; each test deletes its rows after.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from standardwebhooks import Webhook

from services.outreach.api.action_detail import router as action_detail_router
from services.outreach.api.channels import router as channels_router
from services.outreach.core.policy import Decision, Outcome, Policy, Reason
from services.outreach.core.unsubscribe import LINK_PLACEHOLDER, unsubscribe_url, verify
from services.outreach.settings import OutreachSettings
from services.outreach.shell.channels import webhook as webhook_channel
from services.outreach.shell.decide import recheck
from services.outreach.shell.delivery import DeliveryWorker
from services.outreach.shell.resolve import Resolution, resolve
from services.outreach.shell.service import OutreachState
from services.outreach.store import attempts as attempts_store
from services.outreach.store import ledger as ledger_store
from shared.auth import KeyStore
from shared.clock import FixedClock
from shared.http import create_app, no_lifespan
from shared.settings import CommonSettings
from tests.integration.test_outreach_actions_stream import as_published
from tests.support.receivers import SmtpReceiver, WebhookReceiver

pytestmark = pytest.mark.integration

START = datetime(2001, 3, 4, 5, 6, 7, tzinfo=UTC)
UNSUBSCRIBE_SECRET = "test-unsubscribe-secret"


def outreach_settings(**overrides: Any) -> OutreachSettings:
    values: dict[str, Any] = {
        "allow_private_webhooks": True,
        "webhook_timeout_seconds": 1.0,
        "retry_base_seconds": 10.0,
        "retry_max_seconds": 600.0,
        "delivery_max_attempts": 5,
        "public_base_url": "https://tend.example",
        "unsubscribe_secret": UNSUBSCRIBE_SECRET,
        "smtp_port": 1,  # nothing listens there: tests name their SMTP server
        **overrides,
    }
    return OutreachSettings(**values)


async def allow(conn: AsyncConnection, actions: Sequence[Any]) -> list[Decision | None]:
    return [None for _ in actions]


async def suppressed(conn: AsyncConnection, actions: Sequence[Any]) -> list[Decision | None]:
    return [Decision(Outcome.SUPPRESS, Reason.SUPPRESSED) for _ in actions]


class Ledger:
    """Inserts a test's rows and removes them afterwards."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.actions: list[str] = []
        self.channels: list[str] = []
        self.customers: list[str] = []
        self.suppressed: list[str] = []
        self.owners: list[str] = []  # every action's customer

    async def action(
        self,
        channel: str = "webhook",
        *,
        customer_id: str | None = None,
        due: datetime = START,
        email: str | None = None,
        phone: str | None = None,
        body: str = "Hello Ada, how is your new kettle? Café crème on us.",
    ) -> str:
        action_id = str(uuid.uuid4())
        customer = customer_id or f"dlv-{uuid.uuid4().hex[:12]}"
        self.owners.append(customer)
        profile = {k: v for k, v in (("email", email), ("phone", phone)) if v is not None}
        async with self.engine.begin() as conn:
            if profile:
                await conn.execute(
                    text(
                        "INSERT INTO outreach.cards (customer_id, card, complaint_open, change_at)"
                        " VALUES (:c, CAST(:card AS jsonb), false, :at)"
                    ),
                    {
                        "c": customer,
                        "card": orjson.dumps({"profile": profile}).decode(),
                        "at": START,
                    },
                )
                self.customers.append(customer)
            await conn.execute(
                text(
                    "INSERT INTO outreach.actions (id, rule_id, customer_id, occurrence, kind, "
                    "channel, priority, status, decided_at, next_attempt_at, attempts, subject, "
                    "body, offer) VALUES (:id, 'delivery-test', :c, :occ, 'follow_up', :channel, "
                    "50, 'pending', :decided, :due, 0, 'How was it?', :body, "
                    "CAST(:offer AS jsonb))"
                ),
                {
                    "id": action_id,
                    "c": customer,
                    "occ": action_id,
                    "channel": channel,
                    "decided": START - timedelta(minutes=5),
                    "due": due,
                    "body": body,
                    "offer": orjson.dumps({"code": "THANKS10"}).decode(),
                },
            )
        self.actions.append(action_id)
        return action_id

    async def channel(self, kind: str, config: dict[str, Any], secret: str | None = None) -> str:
        channel_id = f"dlv-{kind}-{uuid.uuid4().hex[:8]}"
        async with self.engine.begin() as conn:
            # Newer than any other channel, whatever clock other tests used, so this one is
            # the channel actions of its kind go to.
            await conn.execute(
                text(
                    "INSERT INTO outreach.channels (id, kind, config, secret, enabled, "
                    "created_at, updated_at) VALUES (:id, :kind, CAST(:config AS jsonb), "
                    ":secret, true, greatest(now(), (SELECT max(created_at) + interval '1 ms' "
                    "FROM outreach.channels)), now())"
                ),
                {
                    "id": channel_id,
                    "kind": kind,
                    "config": orjson.dumps(config).decode(),
                    "secret": secret,
                },
            )
        self.channels.append(channel_id)
        return channel_id

    async def to_channel(self, action_ids: Sequence[str], channel_id: str) -> None:
        """The actions name this channel (as a rule that names one decides them)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE outreach.actions SET channel_id = :ch "
                    "WHERE id = ANY(CAST(:ids AS text[]))"
                ),
                {"ch": channel_id, "ids": list(action_ids)},
            )

    async def suppress(self, customer_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO outreach.suppressions (customer_id, reason, source, created_at) "
                    "VALUES (:c, 'test', 'test', now())"
                ),
                {"c": customer_id},
            )
        self.suppressed.append(customer_id)

    async def row(self, action_id: str) -> Any:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    text("SELECT * FROM outreach.actions WHERE id = :id"), {"id": action_id}
                )
            ).one()

    async def channel_row(self, channel_id: str) -> Any:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(
                    text("SELECT * FROM outreach.channels WHERE id = :id"), {"id": channel_id}
                )
            ).one()

    @asynccontextmanager
    async def without_enabled(self, kind: str) -> AsyncIterator[None]:
        """No enabled channel of ``kind`` for the block; the others' are restored after."""
        async with self.engine.begin() as conn:
            ids = (
                await conn.execute(
                    text(
                        "UPDATE outreach.channels SET enabled = false "
                        "WHERE kind = :kind AND enabled RETURNING id"
                    ),
                    {"kind": kind},
                )
            ).scalars()
            disabled = list(ids)
        try:
            yield
        finally:
            async with self.engine.begin() as conn:
                await conn.execute(
                    text(
                        "UPDATE outreach.channels SET enabled = true "
                        "WHERE id = ANY(CAST(:ids AS text[]))"
                    ),
                    {"ids": disabled},
                )

    async def stream(self) -> list[dict[str, Any]]:
        """The messages the actions stream is to carry for this test's customers, in order."""
        async with self.engine.connect() as conn:
            payloads = await conn.scalars(
                text(
                    "SELECT payload FROM outreach.outbox "
                    "WHERE customer_id = ANY(CAST(:ids AS text[])) ORDER BY id"
                ),
                {"ids": self.owners},
            )
            return [orjson.loads(p) for p in payloads]

    async def cleanup(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text("DELETE FROM outreach.outbox WHERE customer_id = ANY(CAST(:ids AS text[]))"),
                {"ids": self.owners},
            )
            await conn.execute(
                text(
                    "DELETE FROM outreach.delivery_attempts "
                    "WHERE action_id = ANY(CAST(:ids AS text[]))"
                ),
                {"ids": self.actions},
            )
            await conn.execute(
                text("DELETE FROM outreach.actions WHERE id = ANY(CAST(:ids AS text[]))"),
                {"ids": self.actions},
            )
            await conn.execute(
                text("DELETE FROM outreach.channels WHERE id = ANY(CAST(:ids AS text[]))"),
                {"ids": self.channels},
            )
            await conn.execute(
                text("DELETE FROM outreach.cards WHERE customer_id = ANY(CAST(:ids AS text[]))"),
                {"ids": self.customers},
            )
            await conn.execute(
                text(
                    "DELETE FROM outreach.suppressions "
                    "WHERE customer_id = ANY(CAST(:ids AS text[]))"
                ),
                {"ids": self.suppressed},
            )


@pytest_asyncio.fixture
async def ledger(engine: AsyncEngine) -> AsyncIterator[Ledger]:
    book = Ledger(engine)
    yield book
    await book.cleanup()


@asynccontextmanager
async def worker(
    engine: AsyncEngine,
    clock: FixedClock,
    recheck: Any = allow,
    *,
    overlap: bool = False,
    **overrides: Any,
) -> AsyncIterator[DeliveryWorker]:
    w = DeliveryWorker(
        engine,
        outreach_settings(**overrides),
        recheck,
        clock,
        rng=random.Random(7),
        overlap=overlap,
    )
    try:
        yield w
    finally:
        await w.aclose()


# -- webhooks ------------------------------------------------------------------------------


async def test_the_recheck_of_a_pick_reads_its_customers_in_one_statement(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    policy = Policy(quiet_hours=None)

    async def still_allowed(conn: AsyncConnection, actions: Sequence[Any]) -> Any:
        return await recheck(conn, actions, policy=policy, now=clock.now())

    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    async with WebhookReceiver() as hook, worker(engine, clock, recheck=still_allowed) as w:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        ids = [await ledger.action("webhook") for _ in range(12)]
        gone = (await ledger.row(ids[3])).customer_id
        await ledger.suppress(gone)

        event.listen(engine.sync_engine, "before_cursor_execute", seen)
        try:
            assert await w.run_once() == 12
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", seen)

        assert [(await ledger.row(i)).status for i in ids] == ["sent"] * 3 + ["suppressed"] + [
            "sent"
        ] * 8
        assert gone not in {r.payload["customer_id"] for r in hook.received}
        assert len([q for q in statements if "outreach.suppressions" in q]) == 1


async def test_a_hold_is_not_kept_from_a_card_whose_complaint_a_batch_is_closing(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    # Delivery re-checks a due promotion while a consumer batch is closing the customer's
    # complaint (its card written, not yet committed). Held on the card it read, the action
    # would be missed by that batch (not yet held when it looked) and stay held for ever.
    clock = FixedClock(START)
    policy = Policy(quiet_hours=None, promotional_kinds=frozenset({"follow_up"}))

    async def judged(conn: AsyncConnection, actions: Sequence[Any]) -> Any:
        return await recheck(conn, actions, policy=policy, now=clock.now())

    def card(open_complaints: int, email: str) -> str:
        profile = {"email": email, "consent": {"marketing": True}}
        return orjson.dumps({"profile": profile, "complaints": {"open": open_complaints}}).decode()

    write = text(
        "UPDATE outreach.cards SET card = CAST(:card AS jsonb), complaint_open = :open "
        "WHERE customer_id = :c"
    )
    async with WebhookReceiver() as hook, worker(engine, clock, recheck=judged) as w:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        closing = await ledger.action("webhook", email="ada@example.com")
        still_open = await ledger.action("webhook", email="bo@example.com")
        ada = (await ledger.row(closing)).customer_id
        bo = (await ledger.row(still_open)).customer_id
        async with engine.begin() as conn:
            for cid, email in ((ada, "ada@example.com"), (bo, "bo@example.com")):
                await conn.execute(write, {"card": card(1, email), "open": True, "c": cid})

        async with engine.connect() as batch:
            await batch.begin()
            await batch.execute(
                write, {"card": card(0, "ada@example.com"), "open": False, "c": ada}
            )
            assert await w.run_once() == 2
            # Ada's is judged again in a moment; Bo's complaint stands, and so does his hold.
            assert (await ledger.row(closing)).status == "pending"
            assert (await ledger.row(still_open)).status == "held"
            await batch.commit()

        clock.advance(timedelta(seconds=2))
        assert await w.run_once() == 1
        assert (await ledger.row(closing)).status == "sent"
        assert [r.payload["customer_id"] for r in hook.received] == [ada]


async def test_connections_to_a_receiver_are_kept_alive_across_passes(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with WebhookReceiver() as hook, worker(engine, clock, delivery_batch=2) as w:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        for _ in range(8):
            await ledger.action("webhook")

        for _ in range(4):
            assert await w.run_once() == 2

        assert len(hook.received) == 8
        assert hook.connections <= 2


async def test_a_kept_alive_connection_does_not_outlive_the_guard_when_the_name_moves(
    engine: AsyncEngine, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The receiver's name first resolves to an address the guard lets through (played by the
    # receiver on loopback), then is re-pointed to a private one: each send resolves and
    # checks again, so the connection kept alive from the first send carries nothing more.
    answers = iter([Resolution((ipaddress.ip_address("127.0.0.1"),), [])])

    async def moving(host: str, port: int, *, allow_private: bool) -> Resolution:
        found = next(answers, None)
        if found is not None:
            return found
        return await resolve("127.0.0.1", port, allow_private=allow_private)

    monkeypatch.setattr(webhook_channel, "resolve", moving)
    clock = FixedClock(START)
    async with (
        WebhookReceiver() as hook,
        worker(engine, clock, allow_private_webhooks=False, delivery_batch=1) as w,
    ):
        url = f"http://hooks.shop.example:{hook.port}/hooks/tend"
        await ledger.channel("webhook", {"url": url}, hook.secret)
        first = await ledger.action("webhook")
        second = await ledger.action("webhook", due=START + timedelta(seconds=1))

        assert await w.run_once() == 1
        clock.set(START + timedelta(seconds=1))
        assert await w.run_once() == 1

        assert (await ledger.row(first)).status == "sent"
        row = await ledger.row(second)
        assert (row.status, row.reason) == ("failed", "unsafe_url")
        assert [r.webhook_id for r in hook.received] == [first]
        assert hook.received[0].headers["host"] == f"hooks.shop.example:{hook.port}"


async def test_a_429_with_retry_after_keeps_the_channel_quiet_that_long(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with (
        WebhookReceiver(script=[429], retry_after="2") as hook,
        worker(engine, clock) as w,
    ):
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        first = await ledger.action("webhook")
        assert await w.run_once() == 1
        row = await ledger.row(first)
        # Busy, not broken: waiting, and not an attempt towards the limit.
        assert (row.status, row.attempts, row.reason) == ("pending", 0, None)
        assert "429" in row.last_error and "Retry-After 2 s" in row.last_error
        assert row.next_attempt_at == START + timedelta(seconds=2)

        # The ledger's clock says both are due; the receiver's two seconds are not over.
        second = await ledger.action("webhook", due=START + timedelta(hours=1))
        clock.set(START + timedelta(hours=1))
        assert await w.run_once() == 2
        assert len(hook.received) == 1
        assert (await ledger.row(second)).attempts == 0  # not an attempt: it was not sent

        async with asyncio.timeout(10):
            while len(hook.received) < 3:
                await asyncio.sleep(0.1)
                clock.set(clock.now() + timedelta(hours=1))
                await w.run_once()
        assert {(await ledger.row(i)).status for i in (first, second)} == {"sent"}
        assert min(hook.arrivals[1:]) >= hook.arrivals[0] + 2.0
        async with engine.connect() as conn:
            kept = await attempts_store.of_action(conn, first)
        assert [(a.attempt, a.outcome) for a in kept] == [(1, "sent")]


async def test_a_retry_after_given_as_an_http_date_is_kept_too(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)

    def in_four_seconds() -> str:  # whole seconds: at least three of them still ahead
        return formatdate(time.time() + 4, usegmt=True)

    async with (
        WebhookReceiver(script=[503], retry_after=in_four_seconds) as hook,
        worker(engine, clock) as w,
    ):
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        first = await ledger.action("webhook")
        assert await w.run_once() == 1
        row = await ledger.row(first)
        assert (row.status, row.attempts) == ("pending", 0)
        assert row.next_attempt_at >= START + timedelta(seconds=2)

        async with asyncio.timeout(10):
            while (await ledger.row(first)).status != "sent":
                await asyncio.sleep(0.1)
                clock.set(clock.now() + timedelta(hours=1))
                await w.run_once()
        assert hook.arrivals[1] >= hook.arrivals[0] + 2.0


async def test_throttling_never_exhausts_the_attempts_and_its_wait_is_capped(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with (
        WebhookReceiver(script=[429, 429], retry_after="86400") as hook,
        worker(engine, clock, delivery_max_attempts=1, delivery_retry_after_max_seconds=1) as w,
    ):
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action = await ledger.action("webhook")
        assert await w.run_once() == 1
        row = await ledger.row(action)
        assert (row.status, row.attempts) == ("pending", 0)
        assert row.next_attempt_at == START + timedelta(seconds=1)  # a day, capped to 1 s

        async with asyncio.timeout(10):
            while (await ledger.row(action)).status == "pending":
                await asyncio.sleep(0.1)
                clock.set(clock.now() + timedelta(hours=1))
                await w.run_once()
        row = await ledger.row(action)
        assert (row.status, row.attempts) == ("sent", 1)
        assert len(hook.received) == 3


async def answered_at(
    w: DeliveryWorker, hook: WebhookReceiver, clock: FixedClock, at: datetime
) -> None:
    """One more answer from ``hook``, asked at ``at`` on the ledger's clock. The receiver's
    pause (its Retry-After, capped to 0.05 s by the tests below, kept in real time) is over
    first, so the action goes to it rather than waiting its turn."""
    asked = len(hook.received)
    await asyncio.sleep(0.1)
    clock.set(at)
    assert await w.run_once() == 1
    assert len(hook.received) == asked + 1


async def test_a_receiver_busy_for_the_give_up_age_fails_the_action_as_throttled(
    engine: AsyncEngine, ledger: Ledger, actions_api: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    clock = FixedClock(START)
    day = timedelta(hours=24)  # delivery_throttled_give_up_hours' default
    async with (
        WebhookReceiver(default=429, retry_after="3600") as hook,
        worker(engine, clock, delivery_retry_after_max_seconds=0.05) as w,
    ):
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action = await ledger.action("webhook")
        assert await w.run_once() == 1
        row = await ledger.row(action)
        assert (row.status, row.attempts, row.throttled_since) == ("pending", 0, START)

        # Busy every time, for a second less than a day: still waiting, from the first
        # busy answer on, and still no attempt.
        await answered_at(w, hook, clock, START + timedelta(hours=12))
        await answered_at(w, hook, clock, START + day - timedelta(seconds=1))
        row = await ledger.row(action)
        assert (row.status, row.attempts, row.reason) == ("pending", 0, None)
        assert row.throttled_since == START
        async with engine.connect() as conn:
            assert await attempts_store.of_action(conn, action) == []

        # Busy once the day is over: given up, and that answer is its attempt.
        await answered_at(w, hook, clock, START + day)
        row = await ledger.row(action)
        assert (row.status, row.reason, row.attempts) == ("failed", "throttled", 1)
        assert "busy since 2001-03-04 05:06:07 UTC" in row.last_error
        assert "given up after 24.0 h" in row.last_error
        async with engine.connect() as conn:
            kept = await attempts_store.of_action(conn, action)
        assert [(a.attempt, a.outcome, a.http_status) for a in kept] == [(1, "retry", 429)]

        # Failed for good: never asked again.
        clock.set(START + 2 * day)
        await asyncio.sleep(0.1)
        assert await w.run_once() == 0
        assert len(hook.received) == 4

    # The action's detail says why, and since when the receiver was busy.
    resp = await actions_api.get(f"/v1/actions/{action}", headers={"X-API-Key": keys["ops_read"]})
    assert resp.status_code == 200, resp.text
    detail = resp.json()
    assert (detail["status"], detail["reason"], detail["attempts"]) == ("failed", "throttled", 1)
    assert detail["throttled_since"] == START.isoformat().replace("+00:00", "Z")
    assert [(a["attempt"], a["reason"]) for a in detail["delivery_attempts"]] == [(1, "http_429")]


async def test_an_answer_other_than_busy_ends_the_busy_spell(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    day = timedelta(hours=24)
    async with (
        WebhookReceiver(script=[429, 500, 429, 429, 200], retry_after="3600") as hook,
        worker(engine, clock, delivery_retry_after_max_seconds=0.05) as w,
    ):
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action = await ledger.action("webhook")
        assert await w.run_once() == 1
        assert (await ledger.row(action)).throttled_since == START

        # A 500 is an answer of another kind (an attempt): the busy spell is over.
        await answered_at(w, hook, clock, START + timedelta(hours=20))
        row = await ledger.row(action)
        assert (row.status, row.attempts, row.throttled_since) == ("pending", 1, None)

        # Busy again more than a day after the first busy answer: a new spell, with its own
        # day, so the action still waits.
        again = START + timedelta(hours=30)
        await answered_at(w, hook, clock, again)
        await answered_at(w, hook, clock, again + day - timedelta(seconds=1))
        row = await ledger.row(action)
        assert (row.status, row.attempts, row.throttled_since) == ("pending", 1, again)

        # Delivered: sent, and no longer busy.
        await answered_at(w, hook, clock, again + day)
        row = await ledger.row(action)
        assert (row.status, row.attempts, row.throttled_since) == ("sent", 2, None)


async def test_quiet_hours_keep_the_busy_spell_and_a_hold_ends_it(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    later = START + timedelta(hours=1)

    async def quiet_hours(conn: AsyncConnection, rows: Sequence[Any]) -> list[Decision | None]:
        return [Decision(Outcome.DEFER, Reason.QUIET_HOURS, until=later) for _ in rows]

    async def complaint(conn: AsyncConnection, rows: Sequence[Any]) -> list[Decision | None]:
        return [Decision(Outcome.HOLD, Reason.OPEN_COMPLAINT) for _ in rows]

    async with WebhookReceiver(default=429, retry_after="1") as hook:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action = await ledger.action("webhook")
        async with worker(engine, clock) as w:
            assert await w.run_once() == 1
        # The receiver was not asked: the spell goes on.
        clock.set(START + timedelta(minutes=5))
        async with worker(engine, clock, quiet_hours) as w:
            assert await w.run_once() == 1
        row = await ledger.row(action)
        assert (row.status, row.reason, row.throttled_since) == ("pending", "quiet_hours", START)
        # Held for a complaint, it is decided again once that is resolved: a new spell then.
        clock.set(later)
        async with worker(engine, clock, complaint) as w:
            assert await w.run_once() == 1
        row = await ledger.row(action)
        assert (row.status, row.throttled_since) == ("held", None)
        assert len(hook.received) == 1


async def test_a_channel_gone_for_a_while_ends_the_busy_spell(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    """A receiver that was busy, then had no channel for days (an operator disabled it, a 410
    did), is a new episode when its channel comes back: its first busy answer then does not
    fail the action for a spell that began before."""
    clock = FixedClock(START)
    async with WebhookReceiver(default=429, retry_after="1") as hook:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action = await ledger.action("webhook")
        async with worker(engine, clock, delivery_retry_after_max_seconds=0.05) as w:
            assert await w.run_once() == 1
        assert (await ledger.row(action)).throttled_since == START
        async with ledger.without_enabled("webhook"):
            clock.set(START + timedelta(hours=1))
            async with worker(engine, clock) as w:
                assert await w.run_once() == 1
            row = await ledger.row(action)
            assert (row.status, row.throttled_since) == ("pending", None)
        back = START + timedelta(days=3)
        clock.set(back)
        await asyncio.sleep(0.1)  # the receiver's Retry-After has run out
        async with worker(engine, clock, delivery_retry_after_max_seconds=0.05) as w:
            assert await w.run_once() == 1
        row = await ledger.row(action)
        assert (row.status, row.attempts, row.throttled_since) == ("pending", 0, back)
        assert len(hook.received) == 2


async def test_a_channels_rate_limit_is_respected(engine: AsyncEngine, ledger: Ledger) -> None:
    clock = FixedClock(START)
    async with WebhookReceiver() as hook, worker(engine, clock) as w:
        await ledger.channel("webhook", {"url": hook.url, "rate_per_second": 4}, hook.secret)
        for _ in range(10):
            await ledger.action("webhook")

        async with asyncio.timeout(20):
            while len(hook.received) < 10:
                await w.run_once()
                clock.set(clock.now() + timedelta(hours=1))

        # Sends start at least a quarter of a second apart; an arrival may come a little
        # early, never a whole extra send's worth in any one second.
        busiest = max(sum(1 for b in hook.arrivals if a <= b < a + 1.0) for a in hook.arrivals)
        assert busiest <= 5


async def test_a_hanging_receiver_does_not_hold_up_a_fast_one(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with (
        WebhookReceiver(default="hang") as slow,
        WebhookReceiver() as fast,
        worker(engine, clock, webhook_timeout_seconds=30.0) as w,
    ):
        slow_id = await ledger.channel("webhook", {"url": slow.url}, slow.secret)
        fast_id = await ledger.channel("webhook", {"url": fast.url}, fast.secret)
        early = START - timedelta(minutes=1)
        await ledger.to_channel([await ledger.action(due=early) for _ in range(40)], slow_id)
        await ledger.to_channel([await ledger.action() for _ in range(5)], fast_id)

        run = asyncio.create_task(w.run_once())
        try:
            await fast.wait_for(5, timeout=10)  # while every slow send still hangs
            assert not run.done()
        finally:
            slow.release.set()
        # The slow channel's lane held its window; the rest of its actions wait their turn,
        # due and untouched.
        window = w.pace(f"webhook {slow_id}").window
        assert await run == 5 + window
        assert len(fast.received) == 5
        assert len(slow.received) == window


async def test_a_slow_receiver_does_not_starve_a_fast_one(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    # The slow receiver takes two seconds a call and its actions came due first; the
    # worker's loop runs as in the service (passes overlap), a small batch at a time.
    clock = FixedClock(START)
    async with (
        WebhookReceiver(default="late", late_seconds=2.0) as slow,
        WebhookReceiver() as fast,
        worker(engine, clock, webhook_timeout_seconds=5.0, delivery_batch=10, overlap=True) as w,
    ):
        slow_id = await ledger.channel("webhook", {"url": slow.url}, slow.secret)
        fast_id = await ledger.channel("webhook", {"url": fast.url}, fast.secret)
        early = START - timedelta(minutes=1)
        slow_ids = [await ledger.action(due=early) for _ in range(8)]
        fast_ids = [await ledger.action() for _ in range(30)]
        await ledger.to_channel(slow_ids, slow_id)
        await ledger.to_channel(fast_ids, fast_id)

        async def sent(ids: Sequence[str]) -> int:
            async with engine.connect() as conn:
                count = await conn.scalar(
                    text(
                        "SELECT count(*) FROM outreach.actions "
                        "WHERE id = ANY(CAST(:ids AS text[])) AND status = 'sent'"
                    ),
                    {"ids": list(ids)},
                )
            return int(count or 0)

        loop = asyncio.create_task(w.run())
        try:
            async with asyncio.timeout(30):
                while await sent(fast_ids) < len(fast_ids):
                    await asyncio.sleep(0.05)
                slow_when_fast_done = await sent(slow_ids)
                while await sent(slow_ids) < len(slow_ids):
                    await asyncio.sleep(0.1)
        finally:
            w.stop()
            await loop
        # Every fast action was delivered and recorded before the slow ones were.
        assert slow_when_fast_done == 0
        assert len(fast.received) == 30 and len(slow.received) == 8


async def test_an_outcome_the_database_could_not_take_is_recorded_by_the_next_pass(
    engine: AsyncEngine, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FixedClock(START)
    async with WebhookReceiver() as hook, worker(engine, clock) as w:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action = await ledger.action("webhook")
        record = w.record

        async def database_away(*args: Any) -> None:
            raise ConnectionRefusedError("the database is away")

        monkeypatch.setattr(w, "record", database_away)
        with pytest.raises(ConnectionRefusedError):
            await w.run_once()
        assert (await ledger.row(action)).status == "pending"

        monkeypatch.setattr(w, "record", record)  # back: the next pass records the send
        await w.run_once()
        row = await ledger.row(action)
        assert (row.status, row.attempts) == ("sent", 1)
        assert len(hook.received) == 1


async def test_webhook_200_is_sent_and_signed(engine: AsyncEngine, ledger: Ledger) -> None:
    clock = FixedClock(START)
    async with WebhookReceiver() as hook, worker(engine, clock) as w:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action_id = await ledger.action("webhook")

        assert await w.run_once() == 1

        row = await ledger.row(action_id)
        assert (row.status, row.attempts, row.sent_at, row.last_error) == ("sent", 1, START, None)
        [got] = hook.received
        assert got.verified, got.error
        assert got.webhook_id == action_id
        # And once more with the reference package directly, on the bytes as received.
        assert Webhook(hook.secret).verify(got.body, got.headers)["action_id"] == action_id
        assert got.payload == {
            "type": "tend.action",
            "action_id": action_id,
            "rule_id": "delivery-test",
            "customer_id": row.customer_id,
            "kind": "follow_up",
            "audience": "customer",
            "subject": "How was it?",
            "body": "Hello Ada, how is your new kettle? Café crème on us.",
            "offer": {"code": "THANKS10"},
            "occurrence": action_id,
            "decided_at": (START - timedelta(minutes=5)).isoformat(),
        }
        assert got.headers["host"] == f"127.0.0.1:{hook.port}"
        assert await w.run_once() == 0  # nothing left due


async def test_what_delivery_makes_of_an_action_goes_on_the_actions_stream(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with WebhookReceiver(script=[200, 422, 500]) as hook:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        async with worker(engine, clock) as w:
            sent = await ledger.action("webhook")
            assert await w.run_once() == 1
            rejected = await ledger.action("webhook")
            assert await w.run_once() == 1
            retried = await ledger.action("webhook")
            assert await w.run_once() == 1
        # The customer withdrew consent meanwhile: the re-check at send time suppresses it.
        async with worker(engine, clock, suppressed) as w:
            stopped = await ledger.action("webhook")
            assert await w.run_once() == 1

    rows = {a: await ledger.row(a) for a in (sent, rejected, retried, stopped)}
    assert [(rows[a].status, rows[a].attempts) for a in rows] == [
        ("sent", 1),
        ("failed", 1),
        ("pending", 1),  # a retry to come is no change of the action's: nothing said
        ("suppressed", 0),
    ]
    at = START.isoformat()
    assert await ledger.stream() == [
        as_published(rows[sent], decided_again_at=None, updated_at=at),
        as_published(rows[rejected], decided_again_at=None, updated_at=at),
        # The policy's word when it came due is a decision made anew.
        as_published(rows[stopped], decided_again_at=at),
    ]
    assert [m["sent_at"] for m in await ledger.stream()] == [at, None, None]


# -- SMS ----------------------------------------------------------------------------------


async def test_an_sms_reaches_the_provider_signed_with_the_number_in_e164_under_its_fields(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with WebhookReceiver() as provider, worker(engine, clock) as w:
        config = {
            "url": provider.url,
            "from": "TendShop",
            "to_field": "recipient",
            "text_field": "message",
        }
        await ledger.channel("sms", config, provider.secret)
        # Written the national way: read in the default region (US) and sent as E.164.
        action_id = await ledger.action("sms", phone="(415) 555-2671")
        no_phone = await ledger.action("sms", email="ada@example.com")

        assert await w.run_once() == 2

        row = await ledger.row(action_id)
        assert (row.status, row.attempts, row.sent_at) == ("sent", 1, START)
        [got] = provider.received
        assert got.verified, got.error
        assert got.webhook_id == action_id  # a provider deduplicating by it never sends twice
        assert got.payload == {
            "recipient": "+14155552671",
            "message": "Hello Ada, how is your new kettle? Café crème on us.",
            "from": "TendShop",
            "action_id": action_id,
            "customer_id": row.customer_id,
        }
        missing = await ledger.row(no_phone)
        assert (missing.status, missing.reason) == ("failed", "no_address")


async def test_retries_back_off_with_jitter_and_keep_the_webhook_id(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    base = outreach_settings().retry_base_seconds
    async with WebhookReceiver(script=[500, 500, 200]) as hook, worker(engine, clock) as w:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action_id = await ledger.action("webhook")

        gaps = []
        for attempt in (1, 2):
            assert await w.run_once() == 1
            row = await ledger.row(action_id)
            assert (row.status, row.attempts) == ("pending", attempt)
            assert row.last_error == "the endpoint answered 500"
            gaps.append((row.next_attempt_at - clock.now()).total_seconds())
            assert await w.run_once() == 0  # not due before its backoff has passed
            clock.set(row.next_attempt_at)
        assert await w.run_once() == 1

        row = await ledger.row(action_id)
        assert (row.status, row.attempts, row.sent_at) == ("sent", 3, clock.now())
        # Full jitter: attempt n waits uniformly in [0, base·2^(n-1)], so the bound doubles.
        assert 0 <= gaps[0] <= base
        assert 0 <= gaps[1] <= 2 * base
        assert [r.webhook_id for r in hook.received] == [action_id] * 3
        assert all(r.verified for r in hook.received)
        assert [r.answer for r in hook.received] == [500, 500, 200]

    # The bound itself: samples never exceed it, it doubles per attempt, and it is capped.
    settings = outreach_settings()
    sampler = DeliveryWorker(engine, settings, allow, clock, rng=random.Random(1))
    for attempts in range(8):
        bound = min(settings.retry_max_seconds, base * 2**attempts)
        samples = [sampler.backoff(attempts).total_seconds() for _ in range(300)]
        assert max(samples) <= bound
        assert max(samples) > 0.8 * bound  # spread over the whole range: full jitter
    assert sampler.backoff(3, retry_after=500).total_seconds() >= 500
    await sampler.aclose()


async def test_gives_up_after_max_attempts(engine: AsyncEngine, ledger: Ledger) -> None:
    clock = FixedClock(START)
    async with (
        WebhookReceiver(default=503) as hook,
        worker(engine, clock, delivery_max_attempts=2) as w,
    ):
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action_id = await ledger.action("webhook")
        assert await w.run_once() == 1
        clock.set((await ledger.row(action_id)).next_attempt_at)
        assert await w.run_once() == 1
        row = await ledger.row(action_id)
        assert (row.status, row.reason, row.attempts) == ("failed", "max_attempts", 2)
        assert len(hook.received) == 2


async def test_410_disables_the_channel_and_fails_the_action(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with WebhookReceiver(script=[410]) as hook, worker(engine, clock) as w:
        channel_id = await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action_id = await ledger.action("webhook")

        assert await w.run_once() == 1

        row = await ledger.row(action_id)
        assert (row.status, row.reason, row.attempts) == ("failed", "gone", 1)
        channel = await ledger.channel_row(channel_id)
        assert channel.enabled is False
        assert "410" in channel.disabled_reason


async def test_other_4xx_fails_without_retry(engine: AsyncEngine, ledger: Ledger) -> None:
    clock = FixedClock(START)
    async with WebhookReceiver(script=[422]) as hook, worker(engine, clock) as w:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action_id = await ledger.action("webhook")
        assert await w.run_once() == 1
        row = await ledger.row(action_id)
        assert (row.status, row.reason, row.next_attempt_at) == ("failed", "rejected", None)


async def test_loopback_is_refused_unless_private_webhooks_are_allowed(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with (
        WebhookReceiver() as hook,
        worker(engine, clock, allow_private_webhooks=False) as w,
    ):
        for url in (hook.url, f"http://localhost:{hook.port}/", f"http://2130706433:{hook.port}/"):
            await ledger.channel("webhook", {"url": url}, hook.secret)
            action_id = await ledger.action("webhook")
            assert await w.run_once() == 1
            row = await ledger.row(action_id)
            assert (row.status, row.reason) == ("failed", "unsafe_url"), url
            assert "127.0.0.1" in row.last_error or "loopback" in row.last_error
        assert hook.received == []


async def test_hanging_endpoint_times_out_and_is_retried(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with WebhookReceiver(script=["hang", "drop", 200]) as hook, worker(engine, clock) as w:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action_id = await ledger.action("webhook")

        assert await w.run_once() == 1
        row = await ledger.row(action_id)
        assert (row.status, row.attempts) == ("pending", 1)
        assert "no answer within 1 s" in row.last_error

        clock.set(row.next_attempt_at)
        assert await w.run_once() == 1  # the connection is dropped without an answer
        row = await ledger.row(action_id)
        assert (row.status, row.attempts) == ("pending", 2)

        clock.set(row.next_attempt_at)
        assert await w.run_once() == 1
        assert (await ledger.row(action_id)).status == "sent"
        assert {r.webhook_id for r in hook.received} == {action_id}


async def test_no_webhook_channel_keeps_the_action_pending(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with ledger.without_enabled("webhook"), worker(engine, clock) as w:
        action_id = await ledger.action("webhook")
        assert await w.run_once() == 1
        row = await ledger.row(action_id)
        assert (row.status, row.attempts) == ("pending", 0)
        assert row.next_attempt_at > clock.now()
        assert row.last_error == "no enabled webhook channel"


async def test_a_worker_killed_between_pick_and_outcome_loses_nothing(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with WebhookReceiver() as hook:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action_id = await ledger.action("webhook")

        # The first worker picks and sends, then dies before it records the outcome.
        doomed = DeliveryWorker(engine, outreach_settings(), allow, clock)
        jobs, taken = await doomed.pick()
        assert taken == 1
        attempts = await doomed.send(jobs)
        await doomed.aclose()
        del doomed

        row = await ledger.row(action_id)
        assert (row.status, row.attempts) == ("pending", 0)
        lease = row.next_attempt_at
        assert lease > clock.now()

        async with worker(engine, clock) as survivor:
            assert await survivor.run_once() == 0  # still leased: not sent twice meanwhile
            clock.set(lease)
            assert await survivor.run_once() == 1

        row = await ledger.row(action_id)
        assert (row.status, row.attempts) == ("sent", 1)
        assert [r.webhook_id for r in hook.received] == [action_id, action_id]
        assert all(r.verified for r in hook.received)

        # Had the first worker only been slow, its late outcome must not overwrite the
        # survivor's: it no longer holds the lease.
        late = DeliveryWorker(engine, outreach_settings(), allow, clock)
        await late.record(jobs, attempts)
        await late.aclose()
        assert (await ledger.row(action_id)).attempts == 1


def decided_row(customer: str, now: datetime) -> dict[str, Any]:
    """A webhook action as the consumer's decision writes it (the ledger's own insert)."""
    action_id = str(uuid.uuid4())
    return {
        "id": action_id,
        "rule": "delivery-test",
        "customer": customer,
        "occ": action_id,
        "kind": "care",
        "channel": "webhook",
        "channel_id": None,
        "audience": "customer",
        "priority": 50,
        "status": "pending",
        "reason": None,
        "detail": None,
        "decided": now,
        "not_before": None,
        "next": now,
        "subject": "How was it?",
        "body": "Hello Ada",
        "offer": orjson.dumps({"code": "THANKS10"}).decode(),
        "arm": "treatment",
        "tier": None,
        "strategy": None,
        "baseline": None,
        "goal": orjson.dumps({"event": "order.placed", "within_days": 30}).decode(),
    }


async def test_an_action_leased_as_it_is_decided_is_sent_once_with_no_pick(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with (
        WebhookReceiver() as hook,
        worker(engine, clock) as w,
        worker(engine, clock) as other,
    ):
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        # A receiver the worker has not sent to yet is left to a pick, which sets its pace.
        assert w.lease_fresh([decided_row("dlv-fresh-0", START)], START) is None
        ledger.actions.append(await ledger.action("webhook"))
        assert await w.run_once() == 1

        row = decided_row(f"dlv-{uuid.uuid4().hex[:12]}", START)
        fresh = w.lease_fresh([row], START)
        assert fresh is not None and row["next"] == fresh.lease > START
        async with engine.begin() as conn:
            written = await ledger_store.record(conn, [row])
        ledger.actions.append(row["id"])
        # Written leased: no other worker picks it while its sender holds it.
        assert await other.pick() == ([], 0)

        await w.adopt(fresh, {r.action_id for r in written})
        await w.run_once()  # records what it sent
        sent = await ledger.row(row["id"])
        assert (sent.status, sent.attempts) == ("sent", 1)
        assert [r.webhook_id for r in hook.received] == [ledger.actions[0], row["id"]]
        assert orjson.loads(hook.received[1].body)["offer"] == {"code": "THANKS10"}
        assert await other.pick() == ([], 0)


async def test_an_action_leased_as_it_is_decided_by_a_process_that_died_goes_once_its_lease_ends(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with WebhookReceiver() as hook:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        async with worker(engine, clock) as doomed:
            ledger.actions.append(await ledger.action("webhook"))
            assert await doomed.run_once() == 1
            row = decided_row(f"dlv-{uuid.uuid4().hex[:12]}", START)
            fresh = doomed.lease_fresh([row], START)
            assert fresh is not None
            async with engine.begin() as conn:
                await ledger_store.record(conn, [row])
            ledger.actions.append(row["id"])
            # ... and the process dies before it starts the send.

        async with worker(engine, clock) as survivor:
            assert await survivor.run_once() == 0  # still leased
            clock.set(fresh.lease)
            assert await survivor.run_once() == 1
        assert (await ledger.row(row["id"])).status == "sent"
        assert [r.webhook_id for r in hook.received] == [ledger.actions[0], row["id"]]


# -- what an action's detail shows of its delivery -------------------------------------------


@pytest_asyncio.fixture
async def actions_api(
    engine: AsyncEngine, settings: CommonSettings
) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(
        service="outreach-test",
        title="actions",
        description="the action detail under test",
        lifespan=no_lifespan,
        readiness=lambda _: {},
        max_body=settings.max_body_bytes,
    )
    app.include_router(action_detail_router)
    app.state = OutreachState()
    app.state.engine = engine
    app.state.keys = KeyStore(engine, 0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://outreach") as client:
        yield client


async def test_an_actions_detail_shows_its_message_and_every_delivery_attempt(
    engine: AsyncEngine, ledger: Ledger, actions_api: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    clock = FixedClock(START)
    body = f"Your kettle, Ada? Unsubscribe: {LINK_PLACEHOLDER}"
    async with WebhookReceiver(script=[503, "hang", 200]) as hook, worker(engine, clock) as w:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action_id = await ledger.action("webhook", body=body)
        for _ in range(3):
            assert await w.run_once() == 1
            row = await ledger.row(action_id)
            if row.status == "pending":
                clock.set(row.next_attempt_at)

    reader = {"X-API-Key": keys["ops_read"]}
    resp = await actions_api.get(f"/v1/actions/{action_id}", headers=reader)
    assert resp.status_code == 200, resp.text
    detail = resp.json()
    assert (detail["status"], detail["attempts"], detail["rule_id"]) == ("sent", 3, "delivery-test")
    # The message as stored: the link is minted at each send, so the placeholder stays.
    assert (detail["subject"], detail["body"]) == ("How was it?", body)
    assert detail["offer"] == {"code": "THANKS10"}
    attempts = detail["delivery_attempts"]
    assert [(a["attempt"], a["outcome"], a["http_status"]) for a in attempts] == [
        (1, "retry", 503),
        (2, "retry", None),
        (3, "sent", 200),
    ]
    assert attempts[0]["reason"] == "http_503"
    assert (attempts[1]["reason"], attempts[1]["error"]) == ("timeout", "no answer within 1 s")
    assert attempts[0]["at"] == START.isoformat().replace("+00:00", "Z")
    # The hanging endpoint held the attempt until the 1 s timeout.
    assert attempts[1]["duration_ms"] >= 900
    assert all(a["duration_ms"] >= 0 for a in attempts)

    missing = await actions_api.get(f"/v1/actions/{uuid.uuid4()}", headers=reader)
    assert missing.status_code == 404
    too_long = await actions_api.get(f"/v1/actions/{'x' * 37}", headers=reader)
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["field"] == "path.action_id"
    assert (await actions_api.get(f"/v1/actions/{action_id}")).status_code == 401


async def test_a_late_worker_records_no_attempt_over_the_survivors(
    engine: AsyncEngine, ledger: Ledger, actions_api: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    clock = FixedClock(START)
    async with WebhookReceiver(script=[500, 200]) as hook:
        await ledger.channel("webhook", {"url": hook.url}, hook.secret)
        action_id = await ledger.action("webhook")
        slow = DeliveryWorker(engine, outreach_settings(), allow, clock)
        jobs, _ = await slow.pick()
        attempts = await slow.send(jobs)  # the receiver answers 500
        lease = (await ledger.row(action_id)).next_attempt_at
        clock.set(lease)
        async with worker(engine, clock) as survivor:
            assert await survivor.run_once() == 1  # 200: sent
        await slow.record(jobs, attempts)  # too late: no longer its row
        await slow.aclose()

    resp = await actions_api.get(f"/v1/actions/{action_id}", headers={"X-API-Key": keys["ops"]})
    assert [(a["attempt"], a["outcome"]) for a in resp.json()["delivery_attempts"]] == [(1, "sent")]


# -- email ---------------------------------------------------------------------------------


async def test_email_carries_one_click_unsubscribe(engine: AsyncEngine, ledger: Ledger) -> None:
    clock = FixedClock(START)
    async with SmtpReceiver() as smtp:
        # No email channel configured: the settings' SMTP server is used.
        async with (
            ledger.without_enabled("email"),
            worker(engine, clock, smtp_host=smtp.host, smtp_port=smtp.port) as w,
        ):
            action_id = await ledger.action("email", email="ada@example.com")
            assert await w.run_once() == 1

        row = await ledger.row(action_id)
        assert (row.status, row.attempts, row.sent_at) == ("sent", 1, START)
        [mail] = smtp.messages
        assert mail.recipients == ["ada@example.com"]
        assert mail.envelope_from == "hello@tend.localhost"
        message = mail.message
        # Minted when sent (the worker's clock), not when decided.
        link = unsubscribe_url("https://tend.example", row.customer_id, UNSUBSCRIBE_SECRET, START)
        assert message["List-Unsubscribe"] == f"<{link}>"
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        minted = verify(link.rsplit("/", 1)[1], UNSUBSCRIBE_SECRET)
        assert minted is not None and minted.customer_id == row.customer_id
        assert message["Message-ID"] == f"<{action_id}@tend.localhost>"
        assert message["Subject"] == "How was it?"
        assert message["To"] == "ada@example.com"
        body = message.get_body()
        assert body is not None
        assert "Café crème" in body.get_content()


async def test_a_message_gets_its_unsubscribe_link_when_sent(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    # Rendered when decided (a held message may wait for weeks): the body holds the
    # placeholder, and the link that goes out is minted at the send, dated then.
    clock = FixedClock(START + timedelta(days=90))
    async with (
        SmtpReceiver() as smtp,
        ledger.without_enabled("email"),
        worker(engine, clock, smtp_host=smtp.host, smtp_port=smtp.port) as w,
    ):
        await ledger.action("email", email="gil@example.com", body=f"Stop: {LINK_PLACEHOLDER}")
        assert await w.run_once() == 1
    [mail] = smtp.messages
    link = mail.message["List-Unsubscribe"].strip("<>")
    minted = verify(link.rsplit("/", 1)[1], UNSUBSCRIBE_SECRET)
    assert minted is not None and minted.issued == clock.now()
    body = mail.message.get_body()
    assert body is not None and body.get_content().strip() == f"Stop: {link}"


async def test_email_channel_config_is_used(engine: AsyncEngine, ledger: Ledger) -> None:
    clock = FixedClock(START)
    async with SmtpReceiver() as smtp, worker(engine, clock, smtp_ports={smtp.port}) as w:
        await ledger.channel(
            "email",
            {"smtp_host": smtp.host, "smtp_port": smtp.port, "from": "Shop <news@shop.example>"},
        )
        action_id = await ledger.action("email", email="bob@example.com")
        assert await w.run_once() == 1
        assert (await ledger.row(action_id)).status == "sent"
        [mail] = smtp.messages
        assert mail.envelope_from == "news@shop.example"
        assert mail.message["Message-ID"] == f"<{action_id}@shop.example>"


async def test_recheck_stops_a_queued_email(engine: AsyncEngine, ledger: Ledger) -> None:
    clock = FixedClock(START)
    async with (
        SmtpReceiver() as smtp,
        worker(engine, clock, recheck=suppressed, smtp_ports={smtp.port}) as w,
    ):
        await ledger.channel("email", {"smtp_host": smtp.host, "smtp_port": smtp.port})
        action_id = await ledger.action("email", email="carol@example.com")

        assert await w.run_once() == 1

        row = await ledger.row(action_id)
        assert (row.status, row.reason, row.attempts) == ("suppressed", "suppressed", 0)
        assert smtp.messages == []


async def test_email_without_an_address_fails(engine: AsyncEngine, ledger: Ledger) -> None:
    clock = FixedClock(START)
    async with SmtpReceiver() as smtp, worker(engine, clock, smtp_ports={smtp.port}) as w:
        await ledger.channel("email", {"smtp_host": smtp.host, "smtp_port": smtp.port})
        no_card = await ledger.action("email")
        bad = await ledger.action("email", email="ada@example.com\r\nBcc: eve@example.com")
        assert await w.run_once() == 2
        for action_id in (no_card, bad):
            row = await ledger.row(action_id)
            assert (row.status, row.reason) == ("failed", "no_address")
        assert smtp.messages == []


async def test_smtp_down_before_data_is_retried(engine: AsyncEngine, ledger: Ledger) -> None:
    clock = FixedClock(START)
    async with SmtpReceiver() as smtp:
        closed_port = smtp.port
    async with worker(engine, clock, smtp_ports={closed_port}) as w:
        await ledger.channel("email", {"smtp_host": "127.0.0.1", "smtp_port": closed_port})
        action_id = await ledger.action("email", email="dan@example.com")
        assert await w.run_once() == 1
        row = await ledger.row(action_id)
        assert (row.status, row.attempts) == ("pending", 1)
        assert row.next_attempt_at >= clock.now()


async def test_smtp_refusal_is_permanent_or_transient_by_code(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    for reply, status in (("550 5.1.1 no such user", "failed"), ("451 4.3.0 try later", "pending")):
        async with (
            SmtpReceiver(rcpt_reply=reply) as smtp,
            worker(engine, clock, smtp_ports={smtp.port}) as w,
        ):
            await ledger.channel("email", {"smtp_host": smtp.host, "smtp_port": smtp.port})
            action_id = await ledger.action("email", email="erin@example.com")
            assert await w.run_once() == 1
            row = await ledger.row(action_id)
            assert row.status == status, reply
            assert reply.split()[0] in row.last_error


async def test_email_timeout_after_data_is_unknown_and_not_retried(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    clock = FixedClock(START)
    async with (
        SmtpReceiver(data_delay=3) as smtp,
        worker(engine, clock, smtp_ports={smtp.port}) as w,
    ):
        await ledger.channel("email", {"smtp_host": smtp.host, "smtp_port": smtp.port})
        action_id = await ledger.action("email", email="fay@example.com")

        assert await w.run_once() == 1

        row = await ledger.row(action_id)
        assert (row.status, row.reason, row.attempts) == ("unknown", "ambiguous", 1)
        assert row.next_attempt_at is None
        clock.advance(timedelta(days=1))
        assert await w.run_once() == 0


async def test_an_smtp_server_in_our_network_or_on_another_port_is_never_connected(
    engine: AsyncEngine, ledger: Ledger
) -> None:
    # A channel stored before the guard (or a name re-pointed since its save): the send
    # checks the resolved address and the port, and does not connect.
    clock = FixedClock(START)
    async with SmtpReceiver() as smtp:
        for host in (smtp.host, "localhost"):
            async with worker(
                engine, clock, allow_private_webhooks=False, smtp_ports={smtp.port}
            ) as w:
                await ledger.channel("email", {"smtp_host": host, "smtp_port": smtp.port})
                action_id = await ledger.action("email", email="hal@example.com")
                assert await w.run_once() == 1
                row = await ledger.row(action_id)
                assert (row.status, row.reason) == ("failed", "unsafe_host"), host
                assert "loopback" in row.last_error, host
        # Private targets allowed (development), but not a port outside the allowlist.
        async with worker(engine, clock) as w:
            await ledger.channel("email", {"smtp_host": smtp.host, "smtp_port": smtp.port})
            action_id = await ledger.action("email", email="ivy@example.com")
            assert await w.run_once() == 1
            row = await ledger.row(action_id)
            assert (row.status, row.reason) == ("failed", "unsafe_host")
            assert f"port {smtp.port} is not an SMTP port" in row.last_error
        assert smtp.messages == []


# -- the channels API ----------------------------------------------------------------------


@pytest_asyncio.fixture
async def channels_api(
    engine: AsyncEngine, settings: CommonSettings
) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(
        service="outreach-test",
        title="channels",
        description="channels API under test",
        lifespan=no_lifespan,
        readiness=lambda _: {},
        max_body=settings.max_body_bytes,
    )
    app.include_router(channels_router)
    app.state = OutreachState()  # the routes reach outreach's state by its type
    app.state.engine = engine
    app.state.keys = KeyStore(engine, 0)
    app.state.common = settings
    app.state.settings = outreach_settings(allow_private_webhooks=False)
    created: list[str] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://outreach") as client:
        client.event_hooks["response"] = [_remember(created)]
        yield client
    async with engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM outreach.channels WHERE id = ANY(CAST(:ids AS text[]))"),
            {"ids": created},
        )


def _remember(created: list[str]) -> Any:
    async def hook(response: httpx.Response) -> None:
        if response.request.method == "POST" and response.status_code == 201:
            await response.aread()
            created.append(response.json()["id"])

    return hook


async def test_channel_secret_is_shown_once(
    channels_api: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    writer = {"X-API-Key": keys["marketing"]}
    channel_id = f"api-{uuid.uuid4().hex[:8]}"
    created = await channels_api.post(
        "/v1/channels",
        json={"id": channel_id, "kind": "webhook", "config": {"url": "https://93.184.215.14/h"}},
        headers=writer,
    )
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert secret.startswith("whsec_")
    Webhook(secret)  # a valid Standard Webhooks secret

    reader = {"X-API-Key": keys["ops_read"]}
    listed = await channels_api.get("/v1/channels", headers=reader)
    one = await channels_api.get(f"/v1/channels/{channel_id}", headers=reader)
    assert (listed.status_code, one.status_code) == (200, 200)
    assert secret not in listed.text and secret not in one.text
    assert "secret" not in one.json()
    assert one.json()["has_secret"] is True
    assert one.json()["config"] == {"url": "https://93.184.215.14/h"}

    again = await channels_api.post(
        "/v1/channels",
        json={"id": channel_id, "kind": "webhook", "config": {"url": "https://93.184.215.14/h"}},
        headers=writer,
    )
    assert again.status_code == 409


async def test_channel_url_is_checked_on_save(
    channels_api: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    writer = {"X-API-Key": keys["marketing"]}
    for url, why in (
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://0x7f.1/hook", "non-standard numeric form"),
        ("http://169.254.169.254/", "metadata"),
        ("http://localhost/hook", "loopback"),
        ("ftp://hooks.example.com/", "http or https"),
    ):
        answer = await channels_api.post(
            "/v1/channels",
            json={"id": f"api-{uuid.uuid4().hex[:8]}", "kind": "webhook", "config": {"url": url}},
            headers=writer,
        )
        assert answer.status_code == 422, url
        errors = answer.json()["errors"]
        assert errors[0]["field"] == "config.url"
        assert any(why in e["reason"] for e in errors), errors

    missing = await channels_api.post(
        "/v1/channels",
        json={"id": "api-missing-url", "kind": "webhook", "config": {}},
        headers=writer,
    )
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "config.url"

    bad_secret = await channels_api.post(
        "/v1/channels",
        json={
            "id": "api-bad-secret",
            "kind": "webhook",
            "config": {"url": "https://93.184.215.14/h"},
            "secret": "hunter2",
        },
        headers=writer,
    )
    assert bad_secret.status_code == 422
    assert bad_secret.json()["errors"][0]["field"] == "secret"


async def test_an_smtp_server_is_checked_on_save(
    channels_api: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    writer = {"X-API-Key": keys["marketing"]}
    for config, field, why in (
        ({"smtp_host": "127.0.0.1", "smtp_port": 25}, "config.smtp_host", "loopback"),
        ({"smtp_host": "localhost", "smtp_port": 587}, "config.smtp_host", "loopback"),
        ({"smtp_host": "10.1.2.3", "smtp_port": 587}, "config.smtp_host", "private"),
        ({"smtp_host": "169.254.169.254", "smtp_port": 25}, "config.smtp_host", "metadata"),
        ({"smtp_host": "0x7f.1", "smtp_port": 25}, "config.smtp_host", "non-standard"),
        ({"smtp_host": "93.184.215.14", "smtp_port": 22}, "config.smtp_port", "port 22"),
        ({"smtp_host": "93.184.215.14", "smtp_port": 6379}, "config.smtp_port", "port 6379"),
    ):
        answer = await channels_api.post(
            "/v1/channels",
            json={"id": f"api-{uuid.uuid4().hex[:8]}", "kind": "email", "config": config},
            headers=writer,
        )
        assert answer.status_code == 422, config
        errors = answer.json()["errors"]
        assert any(e["field"] == field and why in e["reason"] for e in errors), errors
    fine = await channels_api.post(
        "/v1/channels",
        json={
            "id": f"api-{uuid.uuid4().hex[:8]}",
            "kind": "email",
            "config": {"smtp_host": "93.184.215.14", "smtp_port": 587},
        },
        headers=writer,
    )
    assert fine.status_code == 201, fine.text


async def test_channel_update_and_delete(
    channels_api: httpx.AsyncClient, keys: dict[str, str], engine: AsyncEngine
) -> None:
    writer = {"X-API-Key": keys["marketing"]}
    channel_id = f"api-{uuid.uuid4().hex[:8]}"
    body = {"id": channel_id, "kind": "email", "config": {"from": "Shop <hi@shop.example>"}}
    assert (await channels_api.post("/v1/channels", json=body, headers=writer)).status_code == 201
    forbidden = await channels_api.put(
        f"/v1/channels/{channel_id}",
        json={"config": {}},
        headers={"X-API-Key": keys["ops_read"]},
    )
    assert forbidden.status_code == 403

    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE outreach.channels SET enabled = false, disabled_reason = 'gone' "
                "WHERE id = :id"
            ),
            {"id": channel_id},
        )
    updated = await channels_api.put(
        f"/v1/channels/{channel_id}",
        json={"config": {"smtp_host": "mail.shop.example", "smtp_port": 2525}, "enabled": True},
        headers=writer,
    )
    assert updated.status_code == 200, updated.text
    out = updated.json()
    assert (out["enabled"], out["disabled_reason"]) == (True, None)
    assert out["config"] == {"smtp_host": "mail.shop.example", "smtp_port": 2525}

    email_secret = await channels_api.put(
        f"/v1/channels/{channel_id}",
        json={"config": {}, "secret": "whsec_" + "A" * 44},
        headers=writer,
    )
    assert email_secret.status_code == 422

    deleted = await channels_api.delete(f"/v1/channels/{channel_id}", headers=writer)
    assert deleted.status_code == 204
    gone = await channels_api.get(f"/v1/channels/{channel_id}", headers=writer)
    assert gone.status_code == 404
