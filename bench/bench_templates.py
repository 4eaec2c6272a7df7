"""Template bombs: how long outreach takes to refuse each one, how long a /healthz request
waits meanwhile, and what the limits cost an ordinary render on the hot path.

    python -m bench.bench_templates [--render-ms 50]

The outreach app runs in process on a fresh database and topics; each bomb is sent to
``POST /v1/rules/preview`` while a client asks ``/healthz`` back to back, and the longest of
those answers is the figure that says whether the event loop was held.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from bench.bench_e2e import fresh_database
from services.outreach.app import create_app
from services.outreach.core.template_limits import RenderLimits
from services.outreach.core.templates import SAMPLE_CARD, Template, build_context, render
from services.outreach.settings import OutreachSettings
from shared.auth import Scope, create_key
from shared.db import make_engine

BOMBS: dict[str, str] = {
    "'x' * 10**10": "{{ 'x' * 10**10 }}",
    "9**9**9": "{{ 9**9**9 }}",
    "nested loops": (
        "{% for i in range(20000) %}{% for j in range(3000) %}x{% endfor %}{% endfor %}"
    ),
    "nested loops (from data)": (
        "{% set n = card.value.orders * 300 %}"
        "{% for i in range(n) %}{% for j in range(n) %}x{% endfor %}{% endfor %}"
    ),
    "recursive macro": "{% macro f(n) %}{{ f(n) }}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "doubling list": (
        "{% set ns = namespace(x=[1]) %}{% for i in range(64) %}"
        "{% set ns.x = ns.x + ns.x %}{% endfor %}{{ ns.x|length }}"
    ),
    "slow loop (time limit)": (
        "{% set s = 'x y ' * 20000 %}"
        "{% for i in range(100) %}{% for j in range(99) %}{{ s|wordcount }}{% endfor %}"
        "{% endfor %}"
    ),
}
ORDINARY = Template(
    subject="{{ customer.name }}, a little something",
    body="Hello {{ customer.name }}, thanks for your {{ card.value.orders }} orders. "
    "{% if offer %}Use {{ offer.code }}.{% endif %} Stop: {{ unsubscribe_url }}",
)


@dataclass(frozen=True)
class Refusal:
    bomb: str
    refused_s: float
    health_max_s: float
    healths: int
    limit: str


@dataclass(frozen=True)
class TemplateFigures:
    render_ms: float
    refusals: list[Refusal]
    render_us: float


def _rule(body: str) -> dict[str, Any]:
    return {
        "id": f"bomb-{uuid.uuid4().hex[:8]}",
        "name": "a bomb",
        "trigger": {"type": "broadcast"},
        "conditions": {"eq": ["profile.attributes.run", "nobody"]},
        "action": {"kind": "announcement", "channel": "webhook", "template": {"body": body}},
    }


async def _refuse(client: httpx.AsyncClient, key: str, name: str, body: str) -> Refusal:
    done = asyncio.Event()
    waits: list[float] = []

    async def health() -> None:
        while not done.is_set():
            sent = time.perf_counter()
            await client.get("/healthz")
            waits.append(time.perf_counter() - sent)
            await asyncio.sleep(0.005)

    poller = asyncio.create_task(health())
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    r = await client.post(
        "/v1/rules/preview", json=_rule(body), headers={"Authorization": f"Bearer {key}"}
    )
    refused = time.perf_counter() - started
    done.set()
    await poller
    errors = r.json().get("errors", []) if r.status_code == 422 else []
    limit = errors[0]["reason"] if errors else f"NOT REFUSED ({r.status_code})"
    return Refusal(name, refused, max(waits, default=0.0), len(waits), limit)


def render_cost(n: int = 20_000) -> float:
    """Microseconds per render of an ordinary template, limits enforced."""
    context = build_context(SAMPLE_CARD, {"code": "TEA10"}, "https://example.com/u/x")
    limits = RenderLimits()
    render(ORDINARY, context, limits)
    started = time.perf_counter()
    for _ in range(n):
        render(ORDINARY, context, limits)
    return (time.perf_counter() - started) / n * 1e6


async def measure(render_ms: float = 50.0) -> TemplateFigures:
    run = uuid.uuid4().hex[:8]
    async with fresh_database("templates", f"bench.templates.{run}.") as settings:
        engine = make_engine(settings, pool_size=1)
        try:
            _, key = await create_key(engine, f"bench-{run}-reader", [Scope.OPS_READ])
        finally:
            await engine.dispose()
        app = create_app(
            settings,
            OutreachSettings(consumer_group=f"bench-templates-{run}", template_render_ms=render_ms),
            periodic=False,
        )
        refusals = []
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://o") as client:
                await _refuse(client, key, "warm-up", "Hello")  # first-request costs aside
                for name, body in BOMBS.items():
                    refusals.append(await _refuse(client, key, name, body))
    return TemplateFigures(render_ms, refusals, render_cost())


def print_figures(f: TemplateFigures) -> None:
    print(f"template bombs (render time limit {f.render_ms:g} ms)")
    for r in f.refusals:
        print(
            f"  {r.bomb:26} refused in {r.refused_s * 1000:7.1f} ms; longest /healthz "
            f"{r.health_max_s * 1000:6.1f} ms over {r.healths} requests; {r.limit}"
        )
    print(f"  ordinary template render, limits enforced: {f.render_us:.1f} us")


# What the report holds the figures to.
REFUSE_TARGET_S = 1.0
HEALTH_TARGET_S = 0.1


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--render-ms", type=float, default=50.0)
    args = parser.parse_args()
    print_figures(await measure(args.render_ms))


if __name__ == "__main__":
    asyncio.run(main())
