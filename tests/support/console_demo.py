"""The console on the demo's data, for ``make screenshots`` and the console's bench part.

Ingest, scoring, outreach and the console run as processes (as ``make run`` runs them) on a
fresh database and topic prefix of the real PostgreSQL and Kafka, with a webhook receiver
and an SMTP receiver standing in for the local sinks. The demo's history (``make run``'s:
the CDNOW sample with seeded profiles, visits and complaints, shifted to end today) — all of
it, or the slice of its first customers — is loaded as the demo loads it: the default rule
pack and a webhook channel, every event through ingest, a refit and a sweep, a scheduler
tick and the two launches. The simulated responses the demo then posts are left out.
"""

from __future__ import annotations

import asyncio
import importlib.util
import secrets
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from cli.replay import ReplayReport, post_events
from services.console.session import SignInLinks
from shared.auth import Scope, create_key
from shared.db import make_engine
from shared.settings import CommonSettings
from tests.support.databases import fresh_settings
from tests.support.receivers import SmtpReceiver, WebhookReceiver
from tests.support.servers import ServiceProcess

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "scoring", "outreach", "console")


def demo_module() -> ModuleType:
    """``deploy/local/demo.py`` (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("demo", ROOT / "deploy" / "local" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def demo_events(customers: int | None = None) -> list[dict[str, Any]]:
    """The demo's events; with ``customers``, only those of the first ones (by CDNOW id)."""
    demo = demo_module()
    today = datetime.now(UTC).date()
    purchases = demo.shifted(demo.read_cdnow(demo.cdnow_sample()), today)
    if customers is not None:
        kept = set(sorted({p.customer_id for p in purchases}, key=int)[:customers])
        purchases = [p for p in purchases if p.customer_id in kept]
    events: list[dict[str, Any]] = demo.demo_events(purchases, today)
    return events


@dataclass(frozen=True)
class ConsoleDemo:
    console: str
    urls: dict[str, str]
    secret: str
    admin_key: str
    events: int
    customers: int

    def signin_link(self) -> str:
        """A one-time sign-in link for the admin key (every scope)."""
        return f"{self.console}/signin/link?token={SignInLinks(self.secret).mint(self.admin_key)}"

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}


async def _load(
    urls: dict[str, str],
    ingest_key: str,
    admin_key: str,
    events: list[dict[str, Any]],
    hooks: WebhookReceiver,
) -> None:
    demo = demo_module()
    admin = {"Authorization": f"Bearer {admin_key}"}
    async with (
        httpx.AsyncClient(
            base_url=urls["ingest"],
            timeout=60,
            headers={"Authorization": f"Bearer {ingest_key}"},
        ) as ingest,
        httpx.AsyncClient(base_url=urls["scoring"], timeout=120) as scoring,
        httpx.AsyncClient(base_url=urls["outreach"], timeout=120) as outreach,
    ):
        await demo.setup_outreach(outreach, admin_key, hooks.url, hooks.secret)
        report = ReplayReport()
        await post_events(ingest, list(enumerate(events, start=1)), report)
        if report.rejected:
            raise RuntimeError(f"ingest rejected {report.rejected} of the demo's events")
        customers, revenue = demo.expected_totals(events)
        await demo.wait_scored(scoring, admin_key, customers, revenue)
        (await scoring.post("/v1/ops/refit", headers=admin)).raise_for_status()
        (await scoring.post("/v1/ops/sweep", headers=admin)).raise_for_status()
        await demo.wait_outreach_caught_up(scoring, outreach, admin_key)
        (await outreach.post("/v1/ops/tick", headers=admin)).raise_for_status()
        await demo.launch_broadcasts(outreach, admin_key)
        await asyncio.sleep(3)  # delivery to the receivers


@asynccontextmanager
async def console_demo(
    base: CommonSettings, ports: dict[str, int], customers: int | None = None
) -> AsyncIterator[ConsoleDemo]:
    """The four services on the demo's data (the first ``customers``, or all of them);
    everything stopped, dropped and deleted on the way out."""
    run = uuid.uuid4().hex[:8]
    secret = secrets.token_urlsafe(32)
    urls = {name: f"http://127.0.0.1:{ports[name]}" for name in SERVICES}
    logs = Path(tempfile.mkdtemp(prefix="tend-console-demo-"))
    events = demo_events(customers)
    async with (
        WebhookReceiver() as hooks,
        SmtpReceiver() as smtp,
        fresh_settings(base.model_copy(update={"topic_prefix": f"console.{run}."})) as settings,
    ):
        engine = make_engine(settings, pool_size=1)
        try:
            _, ingest_key = await create_key(engine, "demo-ingest", [Scope.EVENTS_WRITE])
            _, admin_key = await create_key(
                engine,
                "demo",
                [Scope.OPS_READ, Scope.OPS_WRITE, Scope.MARKETING_WRITE],
            )
        finally:
            await engine.dispose()
        env = {
            "TEND_LOG_LEVEL": "WARNING",
            "TEND_OUTREACH_ALLOW_PRIVATE_WEBHOOKS": "true",
            "TEND_OUTREACH_SMTP_PORT": str(smtp.port),
            "TEND_OUTREACH_GLOBAL_CONTROL_PERCENT": "5",
            # Groups of their own: the dev stack's services may be consuming meanwhile.
            "TEND_SCORING_CONSUMER_GROUP": f"console-demo-scoring-{run}",
            "TEND_OUTREACH_CONSUMER_GROUP": f"console-demo-outreach-{run}",
            "TEND_INGEST_SCORING_URL": urls["scoring"],
            "TEND_INGEST_OUTREACH_URL": urls["outreach"],
            "TEND_CONSOLE_INGEST_URL": urls["ingest"],
            "TEND_CONSOLE_SCORING_URL": urls["scoring"],
            "TEND_CONSOLE_OUTREACH_URL": urls["outreach"],
            "TEND_CONSOLE_SESSION_SECRET": secret,
        }
        services = [
            ServiceProcess(name, settings, logs, env, port=ports[name]) for name in SERVICES
        ]
        try:
            for service in services:
                await asyncio.to_thread(service.start)
            await _load(urls, ingest_key, admin_key, events, hooks)
            yield ConsoleDemo(
                urls["console"],
                urls,
                secret,
                admin_key,
                len(events),
                len({e["customer_id"] for e in events}),
            )
        finally:
            for service in services:
                await asyncio.to_thread(service.stop)
