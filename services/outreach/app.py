"""Wiring of the outreach service: the change consumer, the scheduler, delivery workers, the
actions relay, and the marketing and operations APIs."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI

from services.outreach.api.action_detail import router as action_detail_router
from services.outreach.api.actions import router as actions_router
from services.outreach.api.channels import router as channels_router
from services.outreach.api.health import router as health_router
from services.outreach.api.outcomes import router as outcomes_router
from services.outreach.api.policy import router as policy_router
from services.outreach.api.preview import router as preview_router
from services.outreach.api.privacy import router as privacy_router
from services.outreach.api.render import router as render_router
from services.outreach.api.rules import router as rules_router
from services.outreach.api.schedule import router as schedule_router
from services.outreach.api.suppressions import router as suppressions_router
from services.outreach.api.unsubscribe import router as unsubscribe_router
from services.outreach.core.budgets import ReadBudget
from services.outreach.core.policy import Decision
from services.outreach.schemas import describe
from services.outreach.settings import OutreachSettings, outreach_settings
from services.outreach.shell.consumer import ChangeApplier
from services.outreach.shell.current import Current
from services.outreach.shell.decide import recheck
from services.outreach.shell.delivery import DeliveryWorker
from services.outreach.shell.delivery_backlog import refresh_delivery_backlog
from services.outreach.shell.scheduler import tick
from services.outreach.shell.service import OutreachState
from services.outreach.store import customer_events
from shared.clock import Clock
from shared.runtime import Runtime, service_app
from shared.settings import CommonSettings

DESCRIPTION = """
Outreach fires greetings, follow-ups, recalls, win-backs, care and apologies when the rules
marketing writes match a customer's change, within one contact policy (consent, suppression
and one-click unsubscribe, a frequency cap, quiet hours in the customer's time zone, no
promotions during an open complaint), and delivers them by signed webhook or email — once.

Changing rules, policy, channels and suppressions needs `marketing:write`; reading needs
`ops:read`.
"""

OUTBOX_LOCK = 0x7E4D_0002
EVENTS_OUTBOX_LOCK = 0x7E4D_0003


def create_app(
    common: CommonSettings | None = None,
    settings: OutreachSettings | None = None,
    clock: Clock | None = None,
    *,
    periodic: bool = True,
) -> FastAPI:
    """``periodic=False`` leaves the scheduler to ``POST /v1/ops/tick`` (tests drive time);
    delivery and the consumer always run."""
    settings = settings or outreach_settings()
    state = OutreachState()

    async def start(runtime: Runtime) -> None:
        engine, clock, common = runtime.engine, runtime.clock, runtime.state.common
        state.settings = settings
        state.read_budget = ReadBudget(
            seconds=settings.read_time_budget_seconds, rows=settings.read_row_budget
        )
        state.backtests = asyncio.Semaphore(settings.backtests_at_once)
        state.current = current = Current()
        await current.reload(engine)
        state.applier = applier = ChangeApplier(
            engine, settings, clock, current, inbox_retention=common.inbox_retention
        )
        state.relay = relay = runtime.outbox_relay(
            table="outreach.outbox", topic=runtime.topics.actions, lock_key=OUTBOX_LOCK
        )
        # What outreach learns about customers (their own unsubscribe) is a fact like any
        # other: scoring learns it from the events topic, and a rebuild replays it.
        runtime.outbox_relay(
            table=customer_events.TABLE,
            topic=runtime.topics.events,
            lock_key=EVENTS_OUTBOX_LOCK,
            idle_seconds=0.5,
        )

        async def still_allowed(conn: Any, actions: Sequence[Any]) -> list[Decision | None]:
            return await recheck(conn, actions, policy=current.policy, now=clock.now())

        state.delivery = delivery = DeliveryWorker(
            engine,
            settings,
            still_allowed,
            clock,
            require_https=common.environment == "production",
            phone_region=common.phone_region,
            overlap=True,
        )
        applier.delivery = delivery  # webhook actions decided due now go straight to it
        runtime.worker(delivery, "delivery")

        # Registered first whatever the order here, so it stops first: then the relay, then
        # delivery.
        state.consumer = runtime.batch_consumer(
            topics=[runtime.topics.changes],
            group_id=settings.consumer_group,
            handler=applier.handle,
            max_records=settings.batch_max_records,
            then_nudge=[relay, delivery],
        )
        runtime.every(
            common.signals_interval_seconds,
            "signals:delivery",
            lambda: refresh_delivery_backlog(engine, clock.now()),
            at_start=True,
        )
        runtime.every(5, "rules_reload", lambda: current.reload(engine))
        runtime.every(3600, "inbox_prune", applier.prune_inbox, at_start=True)
        if periodic:
            runtime.every(
                settings.scheduler_interval_seconds,
                "scheduler",
                lambda: tick(engine, clock, current, settings),
            )

    return service_app(
        service="outreach",
        state=state,
        title="Tend outreach",
        description=DESCRIPTION,
        start=start,
        routers=[
            rules_router,
            preview_router,
            render_router,
            policy_router,
            suppressions_router,
            unsubscribe_router,
            actions_router,
            # After the actions router: /v1/actions/summary is not an action's id.
            action_detail_router,
            schedule_router,
            health_router,
            outcomes_router,
            channels_router,
            privacy_router,
        ],
        port=settings.port,
        common=common,
        insecure=settings.insecure_defaults(),
        clock=clock,
        form_paths=("/v1/unsubscribe", "/v1/resubscribe"),
        describe=describe,
    )
