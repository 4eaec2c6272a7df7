"""A customer's own opt-out is theirs, end to end on the real broker and database.

A customer unsubscribes through the link in a message: scoring's card says so (when, how,
and no marketing consent), because outreach tells scoring the way every fact travels, as an
event on the events topic; a marketing key cannot lift it, an operator can only with a
reason (audited), and the customer's own re-subscribe link can; and a scoring rebuild from
the events topic keeps it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.outreach.app import create_app as create_outreach
from services.outreach.core.unsubscribe import unsubscribe_url
from services.outreach.settings import OutreachSettings
from services.scoring.app import create_app as create_scoring
from services.scoring.settings import ScoringSettings
from services.scoring.shell.rebuild import rebuild
from shared.auth import Scope, create_key
from shared.clock import FixedClock
from shared.db import make_engine
from shared.events import Envelope, EventType
from shared.kafka import Record, publish_many, start_producer
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.integration.conftest import wait_applied
from tests.support.databases import fresh_settings
from tests.support.pipeline import until

pytestmark = pytest.mark.integration

CUSTOMER = "cust-optout-1"
SECRET = "optout-test-secret"


@asynccontextmanager
async def serve(app: FastAPI, name: str) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{name}") as c,
    ):
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def card_when(
    scoring: httpx.AsyncClient, key: str, holds: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The customer's card, once ``holds`` says it shows what the test waits for."""
    found: dict[str, Any] = {}

    async def shown() -> bool:
        resp = await scoring.get(f"/v1/customers/{CUSTOMER}", headers=bearer(key))
        if resp.status_code != 200:
            return False
        found.update(resp.json())
        return holds(found)

    await until(shown, what=what)
    return found


def consent_of(card: dict[str, Any]) -> dict[str, Any]:
    consent: dict[str, Any] = card["profile"]["consent"]
    return consent


def unsubscribed(card: dict[str, Any]) -> bool:
    return consent_of(card)["unsubscribed"] is not None


def subscribed(card: dict[str, Any]) -> bool:
    return consent_of(card)["unsubscribed"] is None and consent_of(card)["marketing"] is True


async def audit_of(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            await conn.execute(
                text(
                    "SELECT actor, action, after FROM auth.audit_log WHERE subject = :c ORDER BY id"
                ),
                {"c": CUSTOMER},
            )
        )


async def test_a_customers_own_unsubscribe_is_on_the_card_and_only_they_or_ops_lift_it(
    settings: CommonSettings,
) -> None:
    clock = FixedClock(datetime.now(UTC).replace(microsecond=0))
    async with fresh_settings(settings) as own:
        engine = make_engine(own, pool_size=2)
        _, marketing = await create_key(
            engine, "optout-marketing", [Scope.MARKETING_WRITE, Scope.OPS_READ]
        )
        _, ops = await create_key(engine, "optout-ops", [Scope.OPS_READ, Scope.OPS_WRITE])
        profile = Envelope.model_validate(
            {
                "event_id": str(uuid.uuid4()),
                "event_type": EventType.CUSTOMER_UPDATED,
                "customer_id": CUSTOMER,
                "occurred_at": clock.now() - timedelta(days=1),
                "received_at": clock.now() - timedelta(days=1),
                "source": "test",
                "data": {"email": "opt@example.com", "consent": {"email": True, "marketing": True}},
            }
        )
        producer = await start_producer(own)
        topic = Topics.from_settings(own).events
        await publish_many(
            producer, [Record(topic, CUSTOMER.encode(), profile.to_json())], timeout=30
        )
        await producer.stop()
        scoring_settings = ScoringSettings(consumer_group=f"{own.topic_prefix}scoring")
        outreach_settings = OutreachSettings(
            consumer_group=f"{own.topic_prefix}outreach",
            unsubscribe_secret=SECRET,
            public_base_url="http://outreach",
        )

        def link_path() -> str:
            return urlsplit(unsubscribe_url("http://outreach", CUSTOMER, SECRET, clock.now())).path

        async with (
            serve(create_scoring(own, scoring_settings, clock, periodic=False), "scoring") as sc,
            serve(create_outreach(own, outreach_settings, clock, periodic=False), "outreach") as o,
        ):
            await wait_applied(engine, [profile.event_id])
            assert subscribed(await card_when(sc, ops, subscribed, "the profile"))

            # The customer unsubscribes in a browser: the page offers the way back.
            page = await o.post(link_path(), headers={"Accept": "text/html"})
            assert page.status_code == 200 and "You are unsubscribed" in page.text
            card = await card_when(sc, ops, unsubscribed, "the unsubscribe on the card")
            consent = consent_of(card)
            assert consent["marketing"] is False
            assert consent["unsubscribed"]["how"] == "link"
            assert datetime.fromisoformat(consent["unsubscribed"]["at"]) == clock.now()

            # A marketing key cannot lift it, and is told why.
            lift = f"/v1/suppressions/{CUSTOMER}"
            refused = await o.request("DELETE", lift, headers=bearer(marketing))
            assert refused.status_code == 403, refused.text
            message = refused.json()["message"]
            assert "unsubscribed through the link" in message and "ops:write" in message
            # An operator needs a reason, and the reason is kept.
            bare = await o.request("DELETE", lift, headers=bearer(ops))
            assert bare.status_code == 422, bare.text
            assert [e["field"] for e in bare.json()["errors"]] == ["body.reason"]
            reason = "asked by phone to hear from us again (ticket 42)"
            clock.advance(timedelta(minutes=1))
            lifted = await o.request("DELETE", lift, headers=bearer(ops), json={"reason": reason})
            assert lifted.status_code == 204, lifted.text
            *_, entry = await audit_of(engine)
            assert (entry.actor, entry.action) == ("optout-ops", "suppression.deleted")
            assert entry.after == {"lifted_by": "operator", "reason": reason}
            assert subscribed(await card_when(sc, ops, subscribed, "the lift on the card"))

            # Unsubscribed again; the customer's own re-subscribe link lifts it.
            clock.advance(timedelta(minutes=1))
            page = await o.post(link_path(), headers={"Accept": "text/html"})
            await card_when(sc, ops, unsubscribed, "the second unsubscribe")
            match = re.search(r'href="http://outreach(/v1/resubscribe/[^"]+)"', page.text)
            assert match is not None, page.text
            back = match.group(1)
            assert 'method="post"' in (await o.get(back)).text  # opening it changes nothing
            assert unsubscribed(await card_when(sc, ops, unsubscribed, "still unsubscribed"))
            clock.advance(timedelta(minutes=1))
            done = await o.post(back)
            assert done.status_code == 200 and done.json() == {"resubscribed": True}
            assert subscribed(await card_when(sc, ops, subscribed, "the re-subscribe"))
            actors = [(e.actor, e.action) for e in await audit_of(engine)]
            assert actors[-1] == ("resubscribe-link", "suppression.deleted")
            # The same link does nothing more, and never lifts a later unsubscribe.
            clock.advance(timedelta(minutes=1))
            assert (await o.post(link_path())).status_code == 200
            assert (await o.post(back)).json() == {"resubscribed": False}
            card = await card_when(sc, ops, unsubscribed, "the third unsubscribe")
        # What the card says comes from the events topic: a rebuild keeps it.
        assert await rebuild(own, scoring_settings, clock) >= 6
        async with serve(create_scoring(own, scoring_settings, clock, periodic=False), "s") as sc:
            rebuilt = await card_when(sc, ops, unsubscribed, "the rebuilt card")
            assert consent_of(rebuilt) == consent_of(card)
            assert consent_of(rebuilt)["marketing"] is False
        await engine.dispose()
