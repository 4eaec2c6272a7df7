"""Wiring of the scoring service on the shared runtime: the event consumer, the outbox relay,
the sweep and refit loops, and the read API."""

from __future__ import annotations

from fastapi import FastAPI

from services.scoring.api.cohorts import router as cohorts_router
from services.scoring.api.complaints import router as complaints_router
from services.scoring.api.customers import router
from services.scoring.api.deps import Merged, merged_response
from services.scoring.api.duplicates import router as duplicates_router
from services.scoring.api.health import router as health_router
from services.scoring.api.listing import router as listing_router
from services.scoring.api.privacy import router as privacy_router
from services.scoring.api.stats import router as stats_router
from services.scoring.api.timeline import router as timeline_router
from services.scoring.settings import ScoringSettings, scoring_settings
from services.scoring.shell.consumer import EventApplier, customers_touched
from services.scoring.shell.population import PopulationCache
from services.scoring.shell.refit import refit
from services.scoring.shell.service import ScoringState
from services.scoring.shell.sweep import sweep_all
from shared.clock import Clock
from shared.dead_letters_api import router as dead_letters_router
from shared.runtime import Runtime, service_app
from shared.settings import CommonSettings

DESCRIPTION = """
Scoring keeps a score card for every customer — rolling value, RFM, predicted CLV and
P(alive), an 80/20 value tier, a strategy and a lifecycle stage — from the events on
`crm.customer-events.v1`, and publishes every change to `crm.customer-changes.v1`.

Reading needs an API key with `ops:read`; refits and sweeps need `ops:write`.
"""

OUTBOX_LOCK = 0x7E4D_0001
# Outreach holds 0x7E4D_0002 and 0x7E4D_0003.
FORWARDS_LOCK = 0x7E4D_0004


def create_app(
    common: CommonSettings | None = None,
    settings: ScoringSettings | None = None,
    clock: Clock | None = None,
    *,
    periodic: bool = True,
) -> FastAPI:
    """``periodic=False`` leaves sweeps and refits to the ops endpoints (tests drive time)."""
    settings = settings or scoring_settings()
    state = ScoringState()

    async def start(runtime: Runtime) -> None:
        engine, clock = runtime.engine, runtime.clock
        state.settings = settings
        state.population = population = PopulationCache()
        await population.reload(engine)
        state.applier = applier = EventApplier(
            engine,
            settings,
            clock,
            population,
            inbox_retention=runtime.state.common.inbox_retention,
            phone_region=runtime.state.common.phone_region,
        )
        state.relay = relay = runtime.outbox_relay(
            table="scoring.outbox",
            topic=runtime.topics.changes,
            lock_key=OUTBOX_LOCK,
            batch=settings.outbox_batch,
            idle_seconds=settings.outbox_idle_seconds,
        )
        # Events that came under a merged id, on to the survivor on the events topic.
        state.forwards = forwards = runtime.outbox_relay(
            table="scoring.forwards",
            topic=runtime.topics.events,
            lock_key=FORWARDS_LOCK,
            batch=settings.outbox_batch,
            idle_seconds=settings.outbox_idle_seconds,
        )

        state.consumer = runtime.batch_consumer(
            topics=[runtime.topics.events],
            group_id=settings.consumer_group,
            handler=applier.handle,
            max_records=settings.batch_max_records,
            then_nudge=[relay, forwards],
            overlap_by=customers_touched if settings.batch_overlap else None,
        )
        runtime.every(10, "population_reload", lambda: population.reload(engine))
        runtime.every(3600, "inbox_prune", applier.prune_inbox, at_start=True)
        if periodic:
            runtime.every(
                settings.sweep_interval_seconds,
                "sweep",
                lambda: sweep_all(engine, clock, population, settings),
            )
            runtime.every(
                settings.refit_interval_seconds,
                "refit",
                lambda: refit(engine, clock, population, settings),
            )

    app = service_app(
        service="scoring",
        state=state,
        title="Tend scoring",
        description=DESCRIPTION,
        start=start,
        routers=[
            router,
            listing_router,
            stats_router,
            cohorts_router,
            complaints_router,
            privacy_router,
            timeline_router,
            duplicates_router,
            health_router,
            dead_letters_router,
        ],
        port=settings.port,
        common=common,
        clock=clock,
    )
    app.add_exception_handler(Merged, merged_response)
    return app
