"""The whole of Tend as real processes — ingest, scoring and outreach on their own ports —
on a database and topics of a scenario's own, delivering to a webhook receiver in the test.

Settings are short so that faults resolve in seconds: small consumer batches (a kill lands
inside, between and after many transactions), a short webhook timeout, fast delivery
retries with enough attempts to outlast any fault here. The contact policy lets everything
through (no frequency cap, no quiet hours), so every rule match must end up delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth import Scope, create_key
from shared.db import make_engine
from shared.settings import CommonSettings
from tests.support.databases import fresh_settings
from tests.support.receivers import WebhookReceiver
from tests.support.servers import ServiceProcess

# event type -> (rule id, action kind): every accepted event of these types is one action.
RULES: dict[str, tuple[str, str]] = {
    "order.paid": ("chaos-thanks", "follow_up"),
    "complaint.opened": ("chaos-apology", "apology"),
    "visit.recorded": ("chaos-care", "care"),
}
WEBHOOK_TIMEOUT_SECONDS = 1.5


@dataclass
class Pipeline:
    settings: CommonSettings
    engine: AsyncEngine  # the test's own view of the scenario's database
    keys: dict[str, str]
    hook: WebhookReceiver
    logs: Path
    ingest: ServiceProcess
    scoring: list[ServiceProcess]
    outreach: list[ServiceProcess]
    # What the scenario did, for the figures ("kill -9 scoring": 3, ...), and when.
    faults: dict[str, int] = field(default_factory=dict)
    timeline: list[tuple[float, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def fault(self, what: str, count: int = 1) -> None:
        self.faults[what] = self.faults.get(what, 0) + count
        self.note(what if count == 1 else f"{what} ×{count}")

    def note(self, what: str) -> None:
        """Log a step of the scenario (printed with the figures, to read a failure by)."""
        self.timeline.append((time.monotonic() - self.started, what))

    @property
    def processes(self) -> list[ServiceProcess]:
        return [self.ingest, *self.scoring, *self.outreach]

    async def start(self, process: ServiceProcess) -> None:
        """Start ``process`` (again, after a kill: same port) and wait until it is ready."""
        await asyncio.to_thread(process.start, 90)
        self.note(f"{process.service} ready")


def _env(settings: CommonSettings, service: str) -> dict[str, str]:
    common = {"TEND_LOG_LEVEL": "WARNING", "TEND_DB_POOL_SIZE": "4"}
    if service == "ingest":
        return {
            **common,
            "TEND_INGEST_PUBLISH_TIMEOUT_SECONDS": "2",
            "TEND_INGEST_RETRY_AFTER_SECONDS": "1",
        }
    if service == "scoring":
        return {
            **common,
            "TEND_SCORING_CONSUMER_GROUP": f"{settings.topic_prefix}scoring",
            "TEND_SCORING_BATCH_MAX_RECORDS": "20",
            # No refit while the test runs: the population stays the default a clean replay
            # uses.
            "TEND_SCORING_REFIT_INTERVAL_SECONDS": "86400",
        }
    return {
        **common,
        "TEND_OUTREACH_CONSUMER_GROUP": f"{settings.topic_prefix}outreach",
        "TEND_OUTREACH_BATCH_MAX_RECORDS": "20",
        "TEND_OUTREACH_ALLOW_PRIVATE_WEBHOOKS": "true",
        "TEND_OUTREACH_WEBHOOK_TIMEOUT_SECONDS": str(WEBHOOK_TIMEOUT_SECONDS),
        "TEND_OUTREACH_DELIVERY_MAX_ATTEMPTS": "50",
        "TEND_OUTREACH_RETRY_BASE_SECONDS": "0.2",
        "TEND_OUTREACH_RETRY_MAX_SECONDS": "2",
        "TEND_OUTREACH_DELIVERY_IDLE_SECONDS": "0.2",
    }


async def _configure_outreach(url: str, key: str, hook: WebhookReceiver) -> None:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30, trust_env=False
    ) as api:
        policy = {"quiet_hours": None, "frequency_cap": None, "marketing_consent_required": False}
        resp = await api.put("/v1/policy", json=policy)
        assert resp.status_code == 200, resp.text
        channel = {
            "id": "chaos",
            "kind": "webhook",
            "config": {"url": hook.url},
            "secret": hook.secret,
        }
        resp = await api.post("/v1/channels", json=channel)
        assert resp.status_code == 201, resp.text
        for event, (rule_id, kind) in RULES.items():
            rule = {
                "id": rule_id,
                "name": f"{kind} on {event}",
                "trigger": {"type": "event", "event": event},
                "action": {
                    "kind": kind,
                    "channel": "webhook",
                    "template": {"subject": kind, "body": "Hello {{ customer.name }}"},
                },
            }
            resp = await api.post("/v1/rules", json=rule)
            assert resp.status_code == 201, resp.text


@contextlib.asynccontextmanager
async def running_pipeline(
    base: CommonSettings,
    logs: Path,
    hook: WebhookReceiver,
    *,
    scoring: int = 1,
    outreach: int = 1,
) -> AsyncIterator[Pipeline]:
    """Tend on a fresh database and topic prefix of ``base``'s servers, with ``scoring`` and
    ``outreach`` instances in their consumer groups; every process is stopped on exit."""
    await asyncio.to_thread(logs.mkdir, parents=True, exist_ok=True)
    async with fresh_settings(base) as settings:
        engine = make_engine(settings, pool_size=2)
        keys = {}
        for role, scopes in {
            "ingest": [Scope.EVENTS_WRITE],
            "marketing": [Scope.MARKETING_WRITE, Scope.OPS_READ],
        }.items():
            _, keys[role] = await create_key(engine, f"chaos-{role}", scopes)

        def process(service: str) -> ServiceProcess:
            return ServiceProcess(service, settings, logs, extra_env=_env(settings, service))

        p = Pipeline(
            settings,
            engine,
            keys,
            hook,
            logs,
            ingest=process("ingest"),
            scoring=[process("scoring") for _ in range(scoring)],
            outreach=[process("outreach") for _ in range(outreach)],
        )
        try:
            # Outreach's rules are in place before any change reaches it; instances started
            # after load them at start-up.
            first, *others = p.outreach
            await asyncio.gather(
                *(p.start(proc) for proc in (p.ingest, *p.scoring, first)),
            )
            await _configure_outreach(first.url, keys["marketing"], hook)
            await asyncio.gather(*(p.start(proc) for proc in others))
            yield p
        finally:
            await asyncio.gather(*(asyncio.to_thread(proc.stop) for proc in p.processes))
            await engine.dispose()
