"""Membership through the real pipeline: a customer crossing the gold threshold is gold on the
card, a "welcome to gold" rule fires once (another order within gold does not fire it again),
and time lowering the tier is published by the sweep and fires a downgrade rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from services.outreach.settings import OutreachSettings
from services.scoring.settings import MembershipTier, ScoringSettings
from shared.clock import FixedClock
from shared.settings import CommonSettings
from shared.topics import Topics
from tests.support.kafka_io import read_all
from tests.support.pipeline import (
    actions_of,
    add_rule,
    add_webhook_channel,
    consumers_assigned,
    outreach_caught_up,
    outreach_has_seen,
    post_events,
    scoring_op,
    statuses,
    until,
    until_status,
)
from tests.support.receivers import WebhookReceiver
from tests.support.stack import isolated_stack

pytestmark = pytest.mark.integration

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)  # noon in Paris: far from quiet hours
TIERS = (
    MembershipTier(name="silver", min_spend_365d=Decimal(300)),
    MembershipTier(name="gold", min_spend_365d=Decimal(1000)),
)


def rule(rule_id: str, trigger: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": rule_id,
        "name": rule_id,
        "trigger": trigger,
        "action": {
            "kind": "greeting",
            "channel": "webhook",
            "template": {"body": "{{ card.membership.tier }}"},
        },
    }


def order(oid: str, at: datetime, amount: str) -> dict[str, Any]:
    return {
        "type": "order",
        "order_id": oid,
        "customer_id": "ann",
        "status": "paid",
        "amount": amount,
        "currency": "USD",
        "occurred_at": at.isoformat(),
    }


async def test_crossing_gold_fires_the_welcome_once_and_time_lowers_the_tier(
    settings: CommonSettings,
) -> None:
    clock = FixedClock(T0)
    outreach = OutreachSettings(allow_private_webhooks=True)
    scoring = ScoringSettings(membership_tiers=TIERS)
    async with (
        WebhookReceiver() as hook,
        isolated_stack(settings, clock, outreach=outreach, scoring=scoring) as s,
    ):
        await consumers_assigned(s)
        await add_webhook_channel(s, hook.url, hook.secret)
        await add_rule(s, rule("welcome-gold", {**_WELCOME}))
        await add_rule(s, rule("tier-lowered", {"type": "membership", "direction": "downgrade"}))

        profile = {
            "type": "customer",
            "customer_id": "ann",
            "name": "Ann",
            "timezone": "Europe/Paris",
            "consent": {"email": True, "sms": False, "marketing": True},
            "occurred_at": (T0 - timedelta(days=30)).isoformat(),
        }
        silver = [profile, order("o-1", T0 - timedelta(days=3), "400.00")]
        await outreach_has_seen(s, await post_events(s, silver))
        card = (await s.scoring.get("/v1/customers/ann", headers=s.auth("ops"))).json()
        assert card["profile"]["member_tier"] == "silver"
        assert await statuses(s, "ann") == {}

        # The order that crosses the gold threshold.
        await outreach_has_seen(
            s, await post_events(s, [order("o-2", T0 - timedelta(days=2), "700.00")])
        )
        card = (await s.scoring.get("/v1/customers/ann", headers=s.auth("ops"))).json()
        assert card["profile"]["member_tier"] == "gold"
        membership = card["membership"]
        assert (membership["tier"], membership["source"], membership["direction"]) == (
            "gold",
            "computed",
            "upgrade",
        )
        assert membership["previous"] == "silver" and membership["next"] is None
        welcome = await until_status(s, "ann", "welcome-gold", "sent")
        [received] = await hook.wait_for(1)
        assert received.payload["rule_id"] == "welcome-gold"
        assert received.payload["body"] == "gold"

        # Another order above the threshold: still the same gold episode, nothing new.
        await outreach_has_seen(
            s, await post_events(s, [order("o-3", T0 - timedelta(days=1), "300.00")])
        )
        await outreach_caught_up(s)
        assert await statuses(s, "ann") == {"welcome-gold": ("sent", None)}
        assert welcome.occurrence == f"membership:gold@{membership['since']}"

        # A year on, the first two orders have left the window: the sweep lowers the tier to
        # silver (what the last order alone reaches) and publishes it.
        clock.set(T0 + timedelta(days=363, hours=2))  # 14:00 in Paris
        assert (await scoring_op(s, "sweep"))["moved"] >= 1
        card = (await s.scoring.get("/v1/customers/ann", headers=s.auth("ops"))).json()
        assert card["membership"]["tier"] == "silver"
        assert card["membership"]["direction"] == "downgrade"
        await until_status(s, "ann", "tier-lowered", "sent")
        assert set(await statuses(s, "ann")) == {"welcome-gold", "tier-lowered"}

        # The last order leaves the window too; a refit that re-scores every card before the
        # sweep comes round publishes the tier lost with its refresh, not silently.
        clock.set(T0 + timedelta(days=364, hours=2))
        await scoring_op(s, "refit")
        card = (await s.scoring.get("/v1/customers/ann", headers=s.auth("ops"))).json()
        assert card["profile"]["member_tier"] is None
        assert card["membership"]["previous"] == "silver"

        records = await read_all(
            s.settings.kafka_bootstrap_servers, Topics.from_settings(s.settings).changes
        )
        moves = [
            (m["from"], m["to"])
            for r in records
            if (m := orjson.loads(r.value).get("membership_change")) is not None
        ]
        assert moves == [(None, "silver"), ("silver", "gold"), ("gold", "silver"), ("silver", None)]

        async def delivered_thrice() -> bool:
            return len(hook.received) == 3

        # Each downgrade is an episode of its own: the rule on it acted for both.
        await until(delivered_thrice, 30, "the downgrade messages")
        rows = await actions_of(s, "ann")
        assert sorted((r.rule_id, r.occurrence.split("@")[0]) for r in rows) == [
            ("tier-lowered", "membership:"),
            ("tier-lowered", "membership:silver"),
            ("welcome-gold", "membership:gold"),
        ]


_WELCOME = {"type": "membership", "to": ["gold"], "direction": "upgrade"}
